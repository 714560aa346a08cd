#!/usr/bin/env node
// Warden interop client: drives a running Warden with the official MCP TypeScript SDK
// (@modelcontextprotocol/sdk 1.32.2, which speaks the 2025-11-25 initialize handshake).
//
// Environment:
//   WARDEN_URL               e.g. http://127.0.0.1:8080/mcp   (required)
//   WARDEN_KEY               bearer key sent as `Authorization: Bearer <key>` (required)
//   WARDEN_TS_EXPECT_VERSION protocol version that must be negotiated (default 2025-11-25)
//   WARDEN_TIMEOUT           overall time limit in seconds (default 60)
//   WARDEN_SCENARIO          notes (default: the embedded notes server), upstream (Warden
//                            fronting @modelcontextprotocol/server-everything), asking
//                            (Warden fronting interop/python/modern_upstream.py), sse (Warden
//                            fronting interop/python/sse_upstream.py, on the deprecated
//                            HTTP+SSE transport) or approval
//                            (delete_note held for an operator: WARDEN_BIN and
//                            WARDEN_DATA_DIR name the `warden` that approves it)
//
// Exits 0 when every check passes; otherwise prints `FAIL [ts]: ...` to stderr and exits 1.

import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const TAG = '[ts]';
const EXPECTED_TOOLS = ['create_note', 'search_notes', 'get_note', 'list_notes', 'update_note', 'delete_note'];
// What server-everything (pinned in package.json) must show through Warden.
const UPSTREAM_TOOLS = ['echo', 'get-sum', 'get-structured-content'];
const UPSTREAM_PROMPTS = ['simple-prompt', 'args-prompt'];
const TEXT_TEMPLATE = 'demo://resource/dynamic/text/{resourceId}';
const STATIC_DOC = 'demo://resource/static/document/features.md';
// What this client answers when a server asks it something through Warden.
const ELICITED_NAME = 'Warden TS';
const SAMPLED_MODEL = 'warden-interop-model';
// Not require('@modelcontextprotocol/sdk/package.json'): the SDK's "./*" export maps that to
// dist/esm/package.json, which has no version field.
const sdkVersion = JSON.parse(
  readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url), 'utf8'),
).version;

class CheckFailed extends Error {}

function check(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}

function step(msg) {
  console.log(`${TAG} ${msg}`);
}

// Returns a tool result's structuredContent, failing clearly on tool errors or its absence.
function structured(result, tool) {
  const texts = (result.content ?? []).map((c) => c.text ?? JSON.stringify(c));
  if (result.isError) throw new CheckFailed(`${tool} returned isError=true: ${JSON.stringify(texts)}`);
  check(result.structuredContent != null, `${tool} returned no structuredContent (content was ${JSON.stringify(texts)})`);
  return result.structuredContent;
}

async function run(url, key, expectVersion, scenario) {
  // requestInit.headers is merged into every POST, the standalone GET SSE stream and the DELETE.
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  const transportErrors = [];
  const client = new Client(
    { name: 'warden-interop-ts', version: sdkVersion },
    { capabilities: { elicitation: {}, sampling: {} } },
  );
  // Questions servers ask mid-call arrive on the call's SSE stream.
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    step(`elicitation asked: ${JSON.stringify(request.params.message)}`);
    return { action: 'accept', content: { name: ELICITED_NAME } };
  });
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
    step(`sampling asked: ${request.params.messages.length} message(s)`);
    return { role: 'assistant', content: { type: 'text', text: 'sampled through Warden' }, model: SAMPLED_MODEL };
  });
  // Errors from the background GET SSE stream (opened after notifications/initialized) surface
  // only through onerror, never as a rejected promise: record them and fail on them below.
  client.onerror = (err) => transportErrors.push(err);
  let connected = false;
  try {
    await client.connect(transport);
    connected = true;

    const version = transport.protocolVersion;
    const info = client.getServerVersion();
    step(`negotiated protocol version ${version} (sdk ${sdkVersion}) with server ${info?.name ?? '?'} ${info?.version ?? ''}`.trimEnd());
    check(version === expectVersion, `negotiated protocol version ${JSON.stringify(version)}, expected ${JSON.stringify(expectVersion)}`);
    step(`session id: ${transport.sessionId ?? '(none)'}`);

    await scenario(client);

    // The SDK reports a failed GET twice (onerror, then again from its own .catch): dedupe.
    const streamErrors = [...new Set(transportErrors.filter((e) => e?.name !== 'AbortError').map((e) => e?.message ?? String(e)))];
    check(streamErrors.length === 0, `transport reported errors: ${streamErrors.join('; ')}`);

    // Clean shutdown: DELETE the session (the SDK accepts 2xx or 405), then close.
    const sid = transport.sessionId;
    await transport.terminateSession();
    check(transport.sessionId === undefined, 'terminateSession did not clear the session id');
    step(sid ? `terminateSession ok (DELETE for session ${sid})` : 'terminateSession: no session id, nothing to DELETE');
  } finally {
    await client.close().catch(() => {});
    if (!connected) await transport.close().catch(() => {});
  }
}

// Walks every page of a */list method; `field` names the result's item array.
async function listAll(fetch, field) {
  const items = [];
  let cursor;
  for (let i = 0; i < 50; i++) {
    const page = await fetch(cursor ? { cursor } : undefined);
    items.push(...page[field]);
    cursor = page.nextCursor;
    if (!cursor) break;
  }
  return items;
}

async function scenarioNotes(client) {
  const unique = randomUUID().replaceAll('-', '').slice(0, 12);
  const word = `tsinterop${unique}`;
  const title = `TypeScript SDK interop ${unique}`;
  const body = `Created by the MCP TypeScript SDK interop client. Marker word: ${word}.`;

  // tools/list (walk every page)
  const names = (await listAll((p) => client.listTools(p), 'tools')).map((t) => t.name);
  const missing = EXPECTED_TOOLS.filter((n) => !names.includes(n));
  check(missing.length === 0, `tools/list is missing ${JSON.stringify(missing)} (got ${JSON.stringify(names.sort())})`);
  step(`tools/list ok: ${JSON.stringify([...names].sort())}`);

  // create_note
  const created = structured(
    await client.callTool({ name: 'create_note', arguments: { title, body, tags: ['interop', 'ts'] } }),
    'create_note',
  );
  const noteId = created.id;
  check(typeof noteId === 'string' && noteId !== '', `create_note returned no string id: ${JSON.stringify(created)}`);
  check(created.title === title, `create_note title mismatch: ${JSON.stringify(created.title)}`);
  check(created.body === body, `create_note body mismatch: ${JSON.stringify(created.body)}`);
  for (const field of ['tags', 'created_at', 'updated_at']) {
    check(field in created, `create_note structuredContent lacks ${field}: ${JSON.stringify(created)}`);
  }
  step(`create_note ok: id=${noteId}`);

  // search_notes
  const found = structured(await client.callTool({ name: 'search_notes', arguments: { query: word, limit: 10 } }), 'search_notes');
  check(Array.isArray(found.results), `search_notes structuredContent has no results array: ${JSON.stringify(found)}`);
  const ids = found.results.map((r) => r?.id);
  check(ids.includes(noteId), `search_notes(${JSON.stringify(word)}) did not return note ${noteId}; got ids ${JSON.stringify(ids)}`);
  step(`search_notes ok: ${found.results.length} result(s), created note among them`);

  // get_note
  const got = structured(await client.callTool({ name: 'get_note', arguments: { id: noteId } }), 'get_note');
  check(got.id === noteId, `get_note id mismatch: ${JSON.stringify(got.id)} != ${JSON.stringify(noteId)}`);
  check(got.title === title, `get_note title mismatch: ${JSON.stringify(got.title)} != ${JSON.stringify(title)}`);
  check(got.body === body, `get_note body mismatch: ${JSON.stringify(got.body)} != ${JSON.stringify(body)}`);
  step('get_note ok: title and body match');

  // resources/read notes://{id}
  const uri = `notes://${noteId}`;
  const read = await client.readResource({ uri });
  check(Array.isArray(read.contents) && read.contents.length > 0, `resources/read ${uri} returned no contents`);
  const texts = read.contents.filter((c) => typeof c.text === 'string').map((c) => c.text);
  check(texts.length > 0, `resources/read ${uri} returned no text contents: ${JSON.stringify(read.contents)}`);
  check(texts.some((t) => t.includes(body)), `resources/read ${uri} text does not contain the body: ${JSON.stringify(texts)}`);
  const mime = read.contents[0].mimeType;
  check(mime === undefined || mime.startsWith('text/markdown'), `resources/read ${uri} mimeType ${JSON.stringify(mime)}`);
  step(`resources/read ok: ${uri} (${mime}) contains the body`);

  // tidy up
  structured(await client.callTool({ name: 'delete_note', arguments: { id: noteId } }), 'delete_note');
  step('delete_note ok');
}

// Warden fronting server-everything alone: names pass unchanged, results are relayed as is.
async function scenarioUpstream(client) {
  const unique = randomUUID().replaceAll('-', '').slice(0, 12);

  const names = (await listAll((p) => client.listTools(p), 'tools')).map((t) => t.name);
  const missing = UPSTREAM_TOOLS.filter((n) => !names.includes(n));
  check(missing.length === 0, `tools/list is missing ${JSON.stringify(missing)} (got ${JSON.stringify(names.sort())})`);
  step(`tools/list ok: ${names.length} tools, including ${JSON.stringify(UPSTREAM_TOOLS)}`);

  const message = `hello from ts ${unique}`;
  const echoed = await client.callTool({ name: 'echo', arguments: { message } });
  const echoTexts = (echoed.content ?? []).map((c) => c.text);
  check(!echoed.isError, `echo returned isError=true: ${JSON.stringify(echoTexts)}`);
  check(
    echoTexts.length === 1 && echoTexts[0] === `Echo: ${message}`,
    `echo returned ${JSON.stringify(echoTexts)}, expected ["Echo: ${message}"]`,
  );
  step('tools/call echo ok: message echoed');

  const uris = (await listAll((p) => client.listResources(p), 'resources')).map((r) => r.uri);
  check(uris.includes(STATIC_DOC), `resources/list lacks ${STATIC_DOC} (got ${JSON.stringify(uris)})`);
  const doc = await client.readResource({ uri: STATIC_DOC });
  check(doc.contents?.length === 1, `resources/read ${STATIC_DOC} returned ${doc.contents?.length} contents`);
  const text = doc.contents[0].text;
  check(typeof text === 'string' && text.length > 100, `resources/read ${STATIC_DOC} returned no document: ${JSON.stringify(doc.contents)}`);
  check(doc.contents[0].mimeType === 'text/markdown', `resources/read ${STATIC_DOC} mimeType ${JSON.stringify(doc.contents[0].mimeType)}`);
  step(`resources/read ok: ${STATIC_DOC} (${text.length} chars of text/markdown)`);

  const templates = (await listAll((p) => client.listResourceTemplates(p), 'resourceTemplates')).map((t) => t.uriTemplate);
  check(templates.includes(TEXT_TEMPLATE), `resources/templates/list lacks ${TEXT_TEMPLATE} (got ${JSON.stringify(templates)})`);
  const n = parseInt(unique.slice(0, 6), 16) + 1; // positive, differs per run
  const uri = TEXT_TEMPLATE.replace('{resourceId}', String(n));
  const read = await client.readResource({ uri });
  const texts = (read.contents ?? []).map((c) => c.text);
  check(
    texts.length === 1 && typeof texts[0] === 'string' && texts[0].startsWith(`Resource ${n}: This is a plaintext resource`),
    `resources/read ${uri} returned ${JSON.stringify(texts)}`,
  );
  check(read.contents[0].uri === uri, `resources/read ${uri} answered for uri ${JSON.stringify(read.contents[0].uri)}`);
  step(`resources/read ok: ${uri} (from template)`);

  const prompts = (await listAll((p) => client.listPrompts(p), 'prompts')).map((p) => p.name);
  const missingPrompts = UPSTREAM_PROMPTS.filter((n) => !prompts.includes(n));
  check(missingPrompts.length === 0, `prompts/list is missing ${JSON.stringify(missingPrompts)} (got ${JSON.stringify(prompts)})`);
  const city = `Paris${unique}`;
  const got = await client.getPrompt({ name: 'args-prompt', arguments: { city, state: 'Texas' } });
  const msgs = JSON.stringify((got.messages ?? []).map((m) => [m.role, m.content?.text]));
  const want = JSON.stringify([['user', `What's weather in ${city}, Texas?`]]);
  check(msgs === want, `prompts/get args-prompt returned ${msgs}, expected ${want}`);
  step('prompts/get ok: args-prompt filled in');

  // Questions the upstream asks mid-call come to this client on the call's stream.
  const asked = await client.callTool({ name: 'trigger-elicitation-request', arguments: {} });
  const askedTexts = (asked.content ?? []).map((c) => c.text).join(' ');
  check(!asked.isError && askedTexts.includes(`Name: ${ELICITED_NAME}`), `trigger-elicitation-request returned ${JSON.stringify(askedTexts)}`);
  step('elicitation ok: the upstream got the answer');
  const sampled = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: `hi ${unique}`, maxTokens: 20 } });
  const sampledTexts = (sampled.content ?? []).map((c) => c.text).join(' ');
  check(!sampled.isError && sampledTexts.includes(SAMPLED_MODEL), `trigger-sampling-request returned ${JSON.stringify(sampledTexts)}`);
  step('sampling ok: the upstream got the answer');
}

// Warden fronting a modern upstream that asks: its input_required becomes a question on
// this legacy client's stream, and Warden retries the upstream with the answer.
async function scenarioAsking(client) {
  const answered = await client.callTool({ name: 'ask', arguments: { question: 'Who is calling?' } });
  const texts = (answered.content ?? []).map((c) => c.text);
  check(!answered.isError && JSON.stringify(texts) === JSON.stringify([`accept:${ELICITED_NAME}`]), `ask returned ${JSON.stringify(texts)}`);
  step('ask ok: the modern upstream\'s question was answered');
}

// A held call on a tool with an outputSchema: the answer Warden composes is an error result
// (valid whatever the schema), its request id reaches the client, and once an operator
// approves it the same call runs.
async function scenarioApproval(client) {
  const created = structured(await client.callTool({ name: 'create_note', arguments: { title: 'held', body: 'to be deleted' } }), 'create_note');
  const held = await client.callTool({ name: 'delete_note', arguments: { id: created.id } });
  const text = (held.content ?? []).map((c) => c.text ?? '').join(' ');
  check(held.isError === true, `the held answer is not an error result: ${JSON.stringify(held)}`);
  const requestId = text.match(/apr_[0-9a-f]+/)?.[0];
  check(requestId, `no request id in the held answer: ${JSON.stringify(text)}`);
  step(`delete_note held: ${requestId}`);
  execFileSync(process.env.WARDEN_BIN, ['approvals', 'approve', requestId], {
    env: { ...process.env, WARDEN_DATA_DIR: process.env.WARDEN_DATA_DIR },
  });
  const done = structured(await client.callTool({ name: 'delete_note', arguments: { id: created.id } }), 'delete_note');
  check(done.deleted === true, `the approved call did not run: ${JSON.stringify(done)}`);
  step('delete_note approved and run');
}

// Warden fronting a server on the deprecated HTTP+SSE transport.
async function scenarioSse(client) {
  const names = (await listAll((p) => client.listTools(p), 'tools')).map((t) => t.name);
  check(names.includes('shout'), `tools/list through Warden lacks shout: ${JSON.stringify(names)}`);
  const shouted = await client.callTool({ name: 'shout', arguments: { text: 'through warden' } });
  const texts = (shouted.content ?? []).map((c) => c.text);
  check(!shouted.isError && JSON.stringify(texts) === JSON.stringify(['THROUGH WARDEN']), `shout returned ${JSON.stringify(texts)}`);
  step('shout ok: the HTTP+SSE upstream answered');
}

const SCENARIOS = { sse: scenarioSse, notes: scenarioNotes, upstream: scenarioUpstream, asking: scenarioAsking, approval: scenarioApproval };

async function main() {
  const url = process.env.WARDEN_URL;
  const key = process.env.WARDEN_KEY;
  if (!url || !key) {
    console.error(`FAIL ${TAG}: WARDEN_URL and WARDEN_KEY must be set`);
    return 2;
  }
  const expectVersion = process.env.WARDEN_TS_EXPECT_VERSION || '2025-11-25';
  const timeout = Number(process.env.WARDEN_TIMEOUT || '60');
  const scenario = process.env.WARDEN_SCENARIO || 'notes';
  if (!Object.hasOwn(SCENARIOS, scenario)) {
    console.error(`FAIL ${TAG}: unknown WARDEN_SCENARIO ${JSON.stringify(scenario)} (expected ${Object.keys(SCENARIOS).join(', ')})`);
    return 2;
  }
  let timer;
  try {
    await Promise.race([
      run(url, key, expectVersion, SCENARIOS[scenario]),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new CheckFailed(`timed out after ${timeout}s against ${url}`)), timeout * 1000);
      }),
    ]);
  } catch (err) {
    if (process.env.WARDEN_DEBUG && !(err instanceof CheckFailed)) console.error(err);
    const name = err instanceof CheckFailed ? '' : `${err?.name ?? 'Error'}: `;
    const cause = err?.cause ? ` (cause: ${err.cause.code ?? ''} ${err.cause.message ?? err.cause})` : '';
    console.error(`FAIL ${TAG}: ${name}${err?.message ?? String(err)}${cause}`);
    return 1;
  } finally {
    clearTimeout(timer);
  }
  step('PASS');
  return 0;
}

// Exit explicitly: a timed-out request may still hold the event loop open.
process.exit(await main());

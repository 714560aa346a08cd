#!/usr/bin/env node
// Fixture upstream for the MCP conformance suite (@modelcontextprotocol/conformance 0.1.16,
// server mode). It provides exactly the tools, resources, templates, prompts and utilities
// the suite's server scenarios call, with the names and shapes the scenarios check.
//
//   node fixture-server.mjs              stdio (newline-delimited JSON-RPC): how Warden runs it
//   node fixture-server.mjs --http PORT  Streamable HTTP on http://127.0.0.1:PORT/mcp, to run
//                                        the suite against the fixture directly
//
// Built on the low-level Server of @modelcontextprotocol/sdk 1.32.2 rather than McpServer so
// that input schemas go out verbatim (json-schema-2020-12 checks $schema/$defs survive).
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
    CallToolRequestSchema,
    CompleteRequestSchema,
    CreateMessageResultSchema,
    ElicitResultSchema,
    ErrorCode,
    GetPromptRequestSchema,
    ListPromptsRequestSchema,
    ListResourcesRequestSchema,
    ListResourceTemplatesRequestSchema,
    ListToolsRequestSchema,
    McpError,
    ReadResourceRequestSchema,
    SubscribeRequestSchema,
    UnsubscribeRequestSchema,
    isInitializeRequest,
} from '@modelcontextprotocol/sdk/types.js';

// 1x1 red PNG and a 16-byte silent 8 kHz WAV: the smallest valid media the checks accept.
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';
const WAV = 'UklGRjQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YRAAAAAAAAAAAAAAAAAAAAAAAAAA';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const text = (t) => ({ type: 'text', text: t });
const noArgs = { type: 'object', properties: {} };
const stringArg = (name, description) => ({
    type: 'object',
    properties: { [name]: { type: 'string', description } },
    required: [name],
});

const TOOLS = [
    { name: 'test_simple_text', description: 'Returns simple text content', inputSchema: noArgs },
    { name: 'test_image_content', description: 'Returns image content', inputSchema: noArgs },
    { name: 'test_audio_content', description: 'Returns audio content', inputSchema: noArgs },
    { name: 'test_embedded_resource', description: 'Returns an embedded resource', inputSchema: noArgs },
    { name: 'test_multiple_content_types', description: 'Returns text, image and resource content', inputSchema: noArgs },
    { name: 'test_tool_with_logging', description: 'Sends three info log notifications while running', inputSchema: noArgs },
    { name: 'test_tool_with_progress', description: 'Sends progress 0, 50, 100 of 100', inputSchema: noArgs },
    { name: 'test_error_handling', description: 'Always returns isError: true', inputSchema: noArgs },
    { name: 'test_sampling', description: 'Asks the client for sampling/createMessage', inputSchema: stringArg('prompt', 'The prompt to send to the LLM') },
    { name: 'test_elicitation', description: 'Asks the client for elicitation/create', inputSchema: stringArg('message', 'The message to show the user') },
    { name: 'test_elicitation_sep1034_defaults', description: 'Elicitation whose schema carries defaults (SEP-1034)', inputSchema: noArgs },
    { name: 'test_elicitation_sep1330_enums', description: 'Elicitation with the five enum schema forms (SEP-1330)', inputSchema: noArgs },
    // Pending scenarios (json-schema-2020-12, server-sse-polling) call these two.
    {
        name: 'json_schema_2020_12_tool',
        description: 'Tool with JSON Schema 2020-12 features',
        inputSchema: {
            $schema: 'https://json-schema.org/draft/2020-12/schema',
            type: 'object',
            $defs: {
                address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } },
            },
            properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
            additionalProperties: false,
        },
    },
    { name: 'test_reconnection', description: 'Closes its HTTP SSE stream mid-call when it can (SEP-1699)', inputSchema: noArgs },
];

const RESOURCES = {
    'test://static-text': { name: 'static-text', mimeType: 'text/plain', text: 'This is the content of the static text resource.' },
    'test://static-binary': { name: 'static-binary', mimeType: 'image/png', blob: PNG },
    'test://watched-resource': { name: 'watched-resource', mimeType: 'text/plain', text: 'Watched resource content.' },
};
const TEMPLATE = /^test:\/\/template\/([^/]+)\/data$/;

const PROMPTS = [
    { name: 'test_simple_prompt', description: 'A prompt without arguments' },
    {
        name: 'test_prompt_with_arguments',
        description: 'A prompt with two required arguments',
        arguments: [
            { name: 'arg1', description: 'First test argument', required: true },
            { name: 'arg2', description: 'Second test argument', required: true },
        ],
    },
    {
        name: 'test_prompt_with_embedded_resource',
        description: 'A prompt embedding a resource',
        arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
    },
    { name: 'test_prompt_with_image', description: 'A prompt with image content' },
];
const COMPLETIONS = ['paris', 'park', 'party', 'test', 'testing'];

const ELICIT_USER = {
    type: 'object',
    properties: {
        username: { type: 'string', description: "User's response" },
        email: { type: 'string', description: "User's email address" },
    },
    required: ['username', 'email'],
};
const ELICIT_DEFAULTS = {
    type: 'object',
    properties: {
        name: { type: 'string', description: 'User name', default: 'John Doe' },
        age: { type: 'integer', description: 'User age', default: 30 },
        score: { type: 'number', description: 'User score', default: 95.5 },
        status: { type: 'string', description: 'User status', enum: ['active', 'inactive', 'pending'], default: 'active' },
        verified: { type: 'boolean', description: 'Verification status', default: true },
    },
    required: [],
};
const choices = (prefix, titles) => titles.map((title, i) => ({ const: `value${i + 1}`, title: `${title} ${prefix}` }));
const ELICIT_ENUMS = {
    type: 'object',
    properties: {
        untitledSingle: { type: 'string', enum: ['option1', 'option2', 'option3'] },
        titledSingle: { type: 'string', oneOf: choices('Option', ['First', 'Second', 'Third']) },
        legacyEnum: { type: 'string', enum: ['opt1', 'opt2', 'opt3'], enumNames: ['Option One', 'Option Two', 'Option Three'] },
        untitledMulti: { type: 'array', items: { type: 'string', enum: ['option1', 'option2', 'option3'] } },
        titledMulti: { type: 'array', items: { anyOf: choices('Choice', ['First', 'Second', 'Third']) } },
    },
    required: [],
};

function createServer() {
    const server = new Server(
        { name: 'warden-conformance-fixture', version: '1.0.0' },
        {
            capabilities: {
                tools: {},
                resources: { subscribe: true },
                prompts: {},
                logging: {},
                completions: {},
            },
        },
    );
    const subscriptions = new Set();

    // Logs and progress go through `extra` so that over HTTP they ride the tools/call's own
    // SSE stream; the Server's logging/setLevel handler decides what is filtered out.
    const log = (extra, level, data) =>
        server.isMessageIgnored(level, extra.sessionId)
            ? Promise.resolve()
            : extra.sendNotification({ method: 'notifications/message', params: { level, logger: 'fixture', data } });
    const elicit = (extra, message, requestedSchema) =>
        extra.sendRequest({ method: 'elicitation/create', params: { message, requestedSchema } }, ElicitResultSchema);

    const tools = {
        test_simple_text: async () => ({ content: [text('This is a simple text response for testing.')] }),
        test_image_content: async () => ({ content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] }),
        test_audio_content: async () => ({ content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] }),
        test_embedded_resource: async () => ({
            content: [
                {
                    type: 'resource',
                    resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' },
                },
            ],
        }),
        test_multiple_content_types: async () => ({
            content: [
                text('Multiple content types test:'),
                { type: 'image', data: PNG, mimeType: 'image/png' },
                {
                    type: 'resource',
                    resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: '{"test":"data","value":123}' },
                },
            ],
        }),
        test_tool_with_logging: async (_args, extra) => {
            await log(extra, 'info', 'Tool execution started');
            await sleep(50);
            await log(extra, 'info', 'Tool processing data');
            await sleep(50);
            await log(extra, 'info', 'Tool execution completed');
            return { content: [text('Tool with logging executed successfully')] };
        },
        test_tool_with_progress: async (_args, extra) => {
            const progressToken = extra._meta?.progressToken;
            for (const progress of [0, 50, 100]) {
                if (progressToken !== undefined) {
                    await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress, total: 100 } });
                }
                if (progress < 100) await sleep(50);
            }
            return { content: [text('Tool with progress executed successfully')] };
        },
        test_error_handling: async () => ({
            isError: true,
            content: [text('This tool intentionally returns an error for testing')],
        }),
        test_sampling: async ({ prompt }, extra) => {
            const result = await extra.sendRequest(
                {
                    method: 'sampling/createMessage',
                    params: { messages: [{ role: 'user', content: text(String(prompt)) }], maxTokens: 100 },
                },
                CreateMessageResultSchema,
            );
            const reply = Array.isArray(result.content) ? result.content : [result.content];
            return { content: [text(`LLM response: ${reply.map((c) => c.text ?? `[${c.type}]`).join(' ')}`)] };
        },
        test_elicitation: async ({ message }, extra) => {
            const r = await elicit(extra, String(message), ELICIT_USER);
            return { content: [text(`User response: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`)] };
        },
        test_elicitation_sep1034_defaults: async (_args, extra) => {
            const r = await elicit(extra, 'Please review and update the form fields with defaults', ELICIT_DEFAULTS);
            return { content: [text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`)] };
        },
        test_elicitation_sep1330_enums: async (_args, extra) => {
            const r = await elicit(extra, 'Please choose from the enum fields', ELICIT_ENUMS);
            return { content: [text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`)] };
        },
        json_schema_2020_12_tool: async (args) => ({ content: [text(`Received: ${JSON.stringify(args)}`)] }),
        // SEP-1699 wants the POST stream closed before the result so the client resumes with
        // Last-Event-ID. The SDK offers closeSSEStream only over HTTP with an event store and a
        // >= 2025-11-25 MCP-Protocol-Version header; otherwise (stdio) this just answers late.
        test_reconnection: async (_args, extra) => {
            await sleep(50);
            extra.closeSSEStream?.();
            await sleep(200);
            return { content: [text('Reconnection test completed successfully')] };
        },
    };

    server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: TOOLS }));
    server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
        const tool = tools[req.params.name];
        if (!tool) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${req.params.name}`);
        return tool(req.params.arguments ?? {}, extra);
    });

    server.setRequestHandler(ListResourcesRequestSchema, async () => ({
        resources: Object.entries(RESOURCES).map(([uri, r]) => ({ uri, name: r.name, description: `Fixture resource ${r.name}`, mimeType: r.mimeType })),
    }));
    server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
        resourceTemplates: [
            { uriTemplate: 'test://template/{id}/data', name: 'template-data', description: 'Data for an id', mimeType: 'application/json' },
        ],
    }));
    server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
        const { uri } = req.params;
        const r = RESOURCES[uri];
        if (r) {
            const body = r.blob !== undefined ? { blob: r.blob } : { text: r.text };
            return { contents: [{ uri, mimeType: r.mimeType, ...body }] };
        }
        const m = TEMPLATE.exec(uri);
        if (m) {
            const id = decodeURIComponent(m[1]);
            return { contents: [{ uri, mimeType: 'application/json', text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }) }] };
        }
        throw new McpError(-32002, `Resource not found: ${uri}`, { uri });
    });
    server.setRequestHandler(SubscribeRequestSchema, async (req) => {
        subscriptions.add(req.params.uri);
        return {};
    });
    server.setRequestHandler(UnsubscribeRequestSchema, async (req) => {
        subscriptions.delete(req.params.uri);
        return {};
    });

    server.setRequestHandler(ListPromptsRequestSchema, async () => ({ prompts: PROMPTS }));
    server.setRequestHandler(GetPromptRequestSchema, async (req) => {
        const a = req.params.arguments ?? {};
        const user = (content) => ({ role: 'user', content });
        switch (req.params.name) {
            case 'test_simple_prompt':
                return { messages: [user(text('This is a simple prompt for testing.'))] };
            case 'test_prompt_with_arguments':
                return { messages: [user(text(`Prompt with arguments: arg1='${a.arg1}', arg2='${a.arg2}'`))] };
            case 'test_prompt_with_embedded_resource':
                return {
                    messages: [
                        user({ type: 'resource', resource: { uri: String(a.resourceUri), mimeType: 'text/plain', text: 'Embedded resource content for testing.' } }),
                        user(text('Please process the embedded resource above.')),
                    ],
                };
            case 'test_prompt_with_image':
                return { messages: [user({ type: 'image', data: PNG, mimeType: 'image/png' }), user(text('Please analyze the image above.'))] };
            default:
                throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${req.params.name}`);
        }
    });

    server.setRequestHandler(CompleteRequestSchema, async (req) => {
        const { ref, argument } = req.params;
        const known = ref.type === 'ref/prompt' && ref.name === 'test_prompt_with_arguments';
        const values = known ? COMPLETIONS.filter((v) => v.startsWith(argument.value)) : [];
        return { completion: { values, total: values.length, hasMore: false } };
    });

    return server;
}

// --- HTTP mode: one Server + transport per session, plus the DNS-rebinding guard the
// dns-rebinding-protection scenario probes (non-local Host or Origin -> 403).
const LOCAL = new Set(['localhost', '127.0.0.1', '[::1]']);
const hostnameOf = (value) => {
    try {
        return new URL(value.includes('://') ? value : `http://${value}`).hostname.toLowerCase();
    } catch {
        return '';
    }
};

function reject(res, status, code, message) {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code, message } }));
}

async function readJson(req) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function serveHttp(port) {
    const sessions = new Map();
    const httpServer = http.createServer(async (req, res) => {
        try {
            const origin = req.headers.origin;
            if (!LOCAL.has(hostnameOf(req.headers.host ?? '')) || (origin && !LOCAL.has(hostnameOf(origin)))) {
                return reject(res, 403, -32000, 'Forbidden: non-local Host or Origin');
            }
            if (new URL(req.url, 'http://x').pathname !== '/mcp') return reject(res, 404, -32601, 'Not found');
            const sid = req.headers['mcp-session-id'];
            if (sid !== undefined) {
                const transport = sessions.get(sid);
                if (!transport) return reject(res, 404, -32001, 'Session not found');
                return await transport.handleRequest(req, res);
            }
            if (req.method !== 'POST') return reject(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
            let body;
            try {
                body = await readJson(req);
            } catch {
                return reject(res, 400, -32700, 'Parse error');
            }
            if (!isInitializeRequest(body)) return reject(res, 400, -32000, 'Bad Request: no session; send initialize first');
            const transport = new StreamableHTTPServerTransport({
                sessionIdGenerator: () => randomUUID(),
                onsessioninitialized: (id) => sessions.set(id, transport),
            });
            transport.onclose = () => transport.sessionId && sessions.delete(transport.sessionId);
            await createServer().connect(transport);
            await transport.handleRequest(req, res, body);
        } catch (err) {
            console.error('fixture: request failed:', err);
            if (!res.headersSent) reject(res, 500, ErrorCode.InternalError, 'Internal error');
        }
    });
    httpServer.listen(port, '127.0.0.1', () => {
        console.error(`fixture: listening on http://127.0.0.1:${httpServer.address().port}/mcp`);
    });
}

const i = process.argv.indexOf('--http');
if (i !== -1) {
    const port = Number(process.argv[i + 1]);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
        console.error('usage: fixture-server.mjs [--http PORT]');
        process.exit(2);
    }
    serveHttp(port);
} else {
    // stdout carries JSON-RPC only; diagnostics go to stderr.
    await createServer().connect(new StdioServerTransport());
}

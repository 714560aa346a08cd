#!/usr/bin/env python3
"""Warden interop client: drives a running Warden with the official MCP Python SDK (mcp==2.3.0).

Environment:
  WARDEN_URL            e.g. http://127.0.0.1:8080/mcp   (required)
  WARDEN_KEY            bearer key sent as `Authorization: Bearer <key>` (required)
  WARDEN_EXPECT_VERSION protocol version that must be negotiated (default 2026-07-28,
                        or 2025-11-25 when WARDEN_PY_MODE=legacy)
  WARDEN_PY_MODE        SDK connect mode: auto (default: server/discover, falls back to
                        initialize), legacy (initialize handshake only) or 2026-07-28 (no probe)
  WARDEN_TIMEOUT        overall time limit in seconds (default 60)
  WARDEN_CONNECT        a `warden` binary: talk stdio to `warden connect WARDEN_URL` (the
                        key handed to it in its environment) instead of HTTP to Warden
  WARDEN_SCENARIO       notes (default: the embedded notes server), upstream (Warden
                        fronting @modelcontextprotocol/server-everything), asking (Warden
                        fronting interop/python/modern_upstream.py, which asks for a name),
                        sse (Warden fronting interop/python/sse_upstream.py, a server on
                        the deprecated HTTP+SSE transport), approval (the notes server
                        with delete_note held for an operator: WARDEN_BIN and
                        WARDEN_DATA_DIR name the `warden` that approves it) or injection
                        (a planted note read, then deleted: WARDEN_NOTE_ID, and
                        WARDEN_READ_FIRST=1 to read it first) or traced (Warden fronting
                        the HTTP test fixture with --trace: calls `trace` inside the
                        span WARDEN_TRACEPARENT names, with WARDEN_CANARY as its note,
                        then with an argument it does not take; prints what the fixture
                        received as a line `TRACED <json>`)

Exits 0 when every check passes; otherwise prints `FAIL [python]: ...` to stderr and exits 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import traceback
import uuid
from importlib.metadata import version as pkg_version
from typing import Any

import anyio
import httpx2  # mcp 2.x ships on httpx2 (not httpx)
import mcp_types as types

from mcp import Client, Implementation
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

EXPECTED_TOOLS = {"create_note", "search_notes", "get_note", "list_notes", "update_note", "delete_note"}
# What server-everything (pinned in interop/ts/package.json) must show through Warden.
UPSTREAM_TOOLS = {"echo", "get-sum", "get-structured-content"}
UPSTREAM_PROMPTS = {"simple-prompt", "args-prompt"}
TEXT_TEMPLATE = "demo://resource/dynamic/text/{resourceId}"
STATIC_DOC = "demo://resource/static/document/features.md"
TAG = "[python]"
# What this client answers when a server asks it something through Warden.
ELICITED_NAME = "Warden Python"
SAMPLED_MODEL = "warden-interop-model"


class CheckFailed(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def step(msg: str) -> None:
    print(f"{TAG} {msg}", flush=True)


def structured(result: Any, tool: str) -> Any:
    """Return a tool result's structuredContent, failing clearly on tool errors or its absence."""
    if result.is_error:
        texts = [getattr(c, "text", repr(c)) for c in result.content]
        raise CheckFailed(f"{tool} returned isError=true: {texts}")
    check(
        result.structured_content is not None,
        f"{tool} returned no structuredContent (content was {[getattr(c, 'text', c) for c in result.content]})",
    )
    return result.structured_content


HTTP_ERRORS: list[str] = []
"""Non-2xx HTTP answers seen on the wire: the SDK folds them into generic MCPErrors."""


async def _record_http_error(response: Any) -> None:
    if response.status_code >= 400:
        req = response.request
        what = req.headers.get("mcp-method")
        if what is None and req.method == "POST":
            try:
                what = json.loads(req.content).get("method")
            except Exception:  # noqa: BLE001 - best-effort label only
                what = None
        HTTP_ERRORS.append(f"{req.method} {what or ''} -> HTTP {response.status_code}".replace("  ", " "))


async def answer_elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    step(f"elicitation asked: {params.message!r}")
    return types.ElicitResult(action="accept", content={"name": ELICITED_NAME})


async def answer_sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    step(f"sampling asked: {len(params.messages)} message(s)")
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="sampled through Warden"), model=SAMPLED_MODEL
    )


async def run(url: str, key: str, mode: str, expect_version: str, scenario: str) -> None:
    # The SDK has no `headers=` knob on the transport: headers (incl. auth) live on the
    # httpx2.AsyncClient handed to the transport, and are sent on every POST/GET/DELETE.
    # Timeouts match the SDK's own default client (30 s, 300 s read for SSE streams).
    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx2.Timeout(30.0, read=300.0),
    ) as http:
        http.event_hooks["response"].append(_record_http_error)
        connect = os.environ.get("WARDEN_CONNECT")
        if connect:
            # Through `warden connect`, as a desktop client would: this client speaks
            # stdio to it, and only the bridge speaks HTTP (the key in its environment).
            transport = stdio_client(StdioServerParameters(
                command=connect, args=["connect", url, "--key-env", "WARDEN_KEY"],
                env={"WARDEN_KEY": key},
            ))
            step("over stdio through warden connect")
        else:
            transport = streamable_http_client(url, http_client=http)
        # cache=None: every call must reach Warden (the default client honours ttlMs hints
        # and could answer list/read calls from memory).
        client_info = Implementation(name="warden-interop-python", version=pkg_version("mcp"))
        async with Client(
            transport,
            mode=mode,
            cache=None,
            read_timeout_seconds=30,
            client_info=client_info,
            elicitation_callback=answer_elicitation,
            sampling_callback=answer_sampling,
        ) as client:
            version = client.protocol_version
            info = client.server_info
            step(f"negotiated protocol version {version} (mode={mode}) with server "
                 f"{info.name if info else '?'} {info.version if info else ''}".rstrip())
            check(version == expect_version, f"negotiated protocol version {version!r}, expected {expect_version!r}")

            await SCENARIOS[scenario](client)


async def list_all(fetch: Any, field: str) -> list[Any]:
    """Walks every page of a */list method; `field` names the result's item list."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(50):
        page = await fetch(cursor=cursor)
        items += getattr(page, field)
        cursor = page.next_cursor
        if not cursor:
            break
    return items


async def scenario_notes(client: Client) -> None:
    unique = uuid.uuid4().hex[:12]
    word = f"pyinterop{unique}"
    title = f"Python SDK interop {unique}"
    body = f"Created by the mcp Python SDK interop client. Marker word: {word}."

    names = [t.name for t in await list_all(client.list_tools, "tools")]
    missing = EXPECTED_TOOLS - set(names)
    check(not missing, f"tools/list is missing {sorted(missing)} (got {sorted(names)})")
    step(f"tools/list ok: {sorted(names)}")

    # create_note
    created = structured(
        await client.call_tool("create_note", {"title": title, "body": body, "tags": ["interop", "python"]}),
        "create_note",
    )
    check(isinstance(created, dict), f"create_note structuredContent is not an object: {created!r}")
    note_id = created.get("id")
    check(isinstance(note_id, str) and note_id != "", f"create_note returned no string id: {created!r}")
    check(created.get("title") == title, f"create_note title mismatch: {created.get('title')!r}")
    check(created.get("body") == body, f"create_note body mismatch: {created.get('body')!r}")
    for field in ("tags", "created_at", "updated_at"):
        check(field in created, f"create_note structuredContent lacks {field!r}: {created!r}")
    step(f"create_note ok: id={note_id}")

    # search_notes
    found = structured(await client.call_tool("search_notes", {"query": word, "limit": 10}), "search_notes")
    results = found.get("results") if isinstance(found, dict) else None
    check(isinstance(results, list), f"search_notes structuredContent has no results list: {found!r}")
    ids = [r.get("id") for r in results if isinstance(r, dict)]
    check(note_id in ids, f"search_notes({word!r}) did not return note {note_id}; got ids {ids}")
    step(f"search_notes ok: {len(results)} result(s), created note among them")

    # get_note
    got = structured(await client.call_tool("get_note", {"id": note_id}), "get_note")
    check(isinstance(got, dict), f"get_note structuredContent is not an object: {got!r}")
    check(got.get("id") == note_id, f"get_note id mismatch: {got.get('id')!r} != {note_id!r}")
    check(got.get("title") == title, f"get_note title mismatch: {got.get('title')!r} != {title!r}")
    check(got.get("body") == body, f"get_note body mismatch: {got.get('body')!r} != {body!r}")
    step("get_note ok: title and body match")

    # resources/read notes://{id}
    uri = f"notes://{note_id}"
    read = await client.read_resource(uri)
    check(len(read.contents) > 0, f"resources/read {uri} returned no contents")
    texts = [c.text for c in read.contents if hasattr(c, "text")]
    check(texts, f"resources/read {uri} returned no text contents: {read.contents!r}")
    check(any(body in t for t in texts), f"resources/read {uri} text does not contain the body: {texts!r}")
    mime = read.contents[0].mime_type
    check(mime is None or mime.startswith("text/markdown"), f"resources/read {uri} mimeType {mime!r}")
    step(f"resources/read ok: {uri} ({mime}) contains the body")

    # tidy up
    structured(await client.call_tool("delete_note", {"id": note_id}), "delete_note")
    step("delete_note ok")


async def scenario_upstream(client: Client) -> None:
    """Warden fronting server-everything alone: names pass unchanged, results are relayed as is."""
    unique = uuid.uuid4().hex[:12]

    names = {t.name for t in await list_all(client.list_tools, "tools")}
    missing = UPSTREAM_TOOLS - names
    check(not missing, f"tools/list is missing {sorted(missing)} (got {sorted(names)})")
    step(f"tools/list ok: {len(names)} tools, including {sorted(UPSTREAM_TOOLS)}")

    message = f"hello from python {unique}"
    echoed = await client.call_tool("echo", {"message": message})
    texts = [getattr(c, "text", None) for c in echoed.content]
    check(not echoed.is_error, f"echo returned isError=true: {texts}")
    check(texts == [f"Echo: {message}"], f"echo returned {texts!r}, expected ['Echo: {message}']")
    step("tools/call echo ok: message echoed")

    uris = [str(r.uri) for r in await list_all(client.list_resources, "resources")]
    check(STATIC_DOC in uris, f"resources/list lacks {STATIC_DOC} (got {uris})")
    doc = await client.read_resource(STATIC_DOC)
    check(len(doc.contents) == 1, f"resources/read {STATIC_DOC} returned {len(doc.contents)} contents")
    text = getattr(doc.contents[0], "text", None)
    check(isinstance(text, str) and len(text) > 100, f"resources/read {STATIC_DOC} returned no document: {doc.contents!r}")
    check(doc.contents[0].mime_type == "text/markdown", f"resources/read {STATIC_DOC} mimeType {doc.contents[0].mime_type!r}")
    step(f"resources/read ok: {STATIC_DOC} ({len(text)} chars of text/markdown)")

    templates = [t.uri_template for t in await list_all(client.list_resource_templates, "resource_templates")]
    check(TEXT_TEMPLATE in templates, f"resources/templates/list lacks {TEXT_TEMPLATE} (got {templates})")
    n = int(unique[:6], 16) + 1  # positive, differs per run
    uri = TEXT_TEMPLATE.replace("{resourceId}", str(n))
    read = await client.read_resource(uri)
    texts = [getattr(c, "text", None) for c in read.contents]
    check(len(texts) == 1 and isinstance(texts[0], str) and texts[0].startswith(f"Resource {n}: This is a plaintext resource"),
          f"resources/read {uri} returned {texts!r}")
    check(str(read.contents[0].uri) == uri, f"resources/read {uri} answered for uri {read.contents[0].uri!r}")
    step(f"resources/read ok: {uri} (from template)")

    prompts = {p.name for p in await list_all(client.list_prompts, "prompts")}
    missing = UPSTREAM_PROMPTS - prompts
    check(not missing, f"prompts/list is missing {sorted(missing)} (got {sorted(prompts)})")
    city = f"Paris{unique}"
    got = await client.get_prompt("args-prompt", {"city": city, "state": "Texas"})
    msgs = [(m.role, getattr(m.content, "text", None)) for m in got.messages]
    want = [("user", f"What's weather in {city}, Texas?")]
    check(msgs == want, f"prompts/get args-prompt returned {msgs!r}, expected {want!r}")
    step("prompts/get ok: args-prompt filled in")

    # Questions the (legacy) upstream asks mid-call reach this (modern) client as
    # InputRequiredResult; the SDK answers through the callbacks and retries.
    asked = await client.call_tool("trigger-elicitation-request", {})
    texts = " ".join(getattr(c, "text", "") for c in asked.content)
    check(not asked.is_error and f"Name: {ELICITED_NAME}" in texts, f"trigger-elicitation-request returned {texts!r}")
    step("elicitation ok: the upstream got the answer")
    sampled = await client.call_tool("trigger-sampling-request", {"prompt": f"hi {unique}", "maxTokens": 20})
    texts = " ".join(getattr(c, "text", "") for c in sampled.content)
    check(not sampled.is_error and SAMPLED_MODEL in texts, f"trigger-sampling-request returned {texts!r}")
    step("sampling ok: the upstream got the answer")


async def scenario_asking(client: Client) -> None:
    """Warden fronting a modern upstream that asks: its InputRequiredResult passes through."""
    answered = await client.call_tool("ask", {"question": "Who is calling?"})
    texts = [getattr(c, "text", None) for c in answered.content]
    check(not answered.is_error and texts == [f"accept:{ELICITED_NAME}"], f"ask returned {texts!r}")
    step("ask ok: the modern upstream's question was answered")


async def scenario_approval(client: Client) -> None:
    """A held call on a tool with an outputSchema: the answer Warden composes is an error
    result (valid whatever the schema), its request id reaches the client, and once an
    operator approves it the same call runs."""
    created = structured(
        await client.call_tool("create_note", {"title": "held", "body": "to be deleted"}), "create_note"
    )
    note_id = created["id"]
    held = await client.call_tool("delete_note", {"id": note_id})
    text = " ".join(getattr(c, "text", "") for c in held.content)
    check(held.is_error, f"the held answer is not an error result: {held!r}")
    found = re.search(r"apr_[0-9a-f]+", text)
    check(found is not None, f"no request id in the held answer: {text!r}")
    request_id = found.group(0)
    step(f"delete_note held: {request_id}")
    approved = subprocess.run(
        [os.environ["WARDEN_BIN"], "approvals", "approve", request_id],
        env={**os.environ, "WARDEN_DATA_DIR": os.environ["WARDEN_DATA_DIR"]},
        capture_output=True, text=True, check=False,
    )
    check(approved.returncode == 0, f"warden approvals approve failed: {approved.stderr}")
    done = structured(await client.call_tool("delete_note", {"id": note_id}), "delete_note")
    check(done.get("deleted") is True, f"the approved call did not run: {done!r}")
    step("delete_note approved and run")


async def scenario_injection(client: Client) -> None:
    """The seeds' scenario: WARDEN_NOTE_ID names a note another key of the tenant wrote,
    telling the model to delete every note. With WARDEN_READ_FIRST=1 this client reads it
    first (get_note returns untrusted text), so Warden holds the delete that follows for
    an operator (`[policy] after_untrusted = "approve"`) and nothing is deleted; without
    the read, in a session of its own, the delete follows delete_note's normal rule (the
    user confirms: this client accepts) and runs."""
    note_id = os.environ["WARDEN_NOTE_ID"]
    if os.environ.get("WARDEN_READ_FIRST") == "1":
        got = structured(await client.call_tool("get_note", {"id": note_id}), "get_note")
        check("delete every note" in str(got.get("body")), f"get_note did not return the planted note: {got!r}")
        step("get_note ok: the session has read another key's note")
        held = await client.call_tool("delete_note", {"id": note_id})
        text = " ".join(getattr(c, "text", "") for c in held.content)
        check(held.is_error, f"the delete after untrusted text was not held: {held!r}")
        check(re.search(r"apr_[0-9a-f]+", text) is not None, f"no request id in the held answer: {text!r}")
        step("delete_note after untrusted text: held for an operator")
    else:
        done = structured(await client.call_tool("delete_note", {"id": note_id}), "delete_note")
        check(done.get("deleted") is True, f"the delete in a fresh session did not run: {done!r}")
        step("delete_note in a fresh session: confirmed by the user and run")


async def scenario_sse(client: Client) -> None:
    """Warden fronting a server on the deprecated HTTP+SSE transport."""
    names = [t.name for t in await list_all(client.list_tools, "tools")]
    check("shout" in names, f"tools/list through Warden lacks shout: {names!r}")
    shouted = await client.call_tool("shout", {"text": "through warden"})
    texts = [getattr(c, "text", None) for c in shouted.content]
    check(not shouted.is_error and texts == ["THROUGH WARDEN"], f"shout returned {texts!r}")
    step("shout ok: the HTTP+SSE upstream answered")


async def scenario_traced(client: Client) -> None:
    """The SDK's own OpenTelemetry instrumentation puts the current span's context in
    `params._meta` (SEP-414). With only the OpenTelemetry API installed, the current span
    is the caller's (WARDEN_TRACEPARENT), so that is the context Warden receives."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    _, trace_id, span_id, flags = os.environ["WARDEN_TRACEPARENT"].split("-")
    caller = NonRecordingSpan(SpanContext(
        trace_id=int(trace_id, 16), span_id=int(span_id, 16), is_remote=False,
        trace_flags=TraceFlags(int(flags, 16)),
    ))
    with trace.use_span(caller):
        seen = await client.call_tool("trace", {"note": os.environ["WARDEN_CANARY"]})
        check(not seen.is_error, f"trace failed: {seen!r}")
        print("TRACED " + seen.content[0].text, flush=True)
        step("trace ok: the call went through inside the caller's span")
        try:
            refused = await client.call_tool("trace", {"nope": 1})
            check(refused.is_error, f"an unknown argument was not refused: {refused!r}")
        except MCPError as error:
            check(error.error.code == -32602, f"unexpected refusal {error!r}")
        step("trace with an unknown argument: refused")


SCENARIOS = {
    "traced": scenario_traced,
    "notes": scenario_notes,
    "sse": scenario_sse,
    "upstream": scenario_upstream,
    "asking": scenario_asking,
    "approval": scenario_approval,
    "injection": scenario_injection,
}


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaf_errors(sub)]
    return [exc]


def main() -> int:
    url = os.environ.get("WARDEN_URL")
    key = os.environ.get("WARDEN_KEY")
    if not url or not key:
        print(f"FAIL {TAG}: WARDEN_URL and WARDEN_KEY must be set", file=sys.stderr)
        return 2
    mode = os.environ.get("WARDEN_PY_MODE", "auto")
    expect = os.environ.get("WARDEN_EXPECT_VERSION") or ("2025-11-25" if mode == "legacy" else "2026-07-28")
    timeout = float(os.environ.get("WARDEN_TIMEOUT", "60"))
    scenario = os.environ.get("WARDEN_SCENARIO", "notes")
    if scenario not in SCENARIOS:
        print(f"FAIL {TAG}: unknown WARDEN_SCENARIO {scenario!r} (expected {' or '.join(SCENARIOS)})", file=sys.stderr)
        return 2

    async def bounded() -> None:
        with anyio.fail_after(timeout):
            await run(url, key, mode, expect, scenario)

    try:
        anyio.run(bounded)
    except BaseException as exc:  # noqa: BLE001 - report anything, including ExceptionGroups
        if isinstance(exc, KeyboardInterrupt):
            raise
        for leaf in _leaf_errors(exc):
            if isinstance(leaf, CheckFailed):
                print(f"FAIL {TAG}: {leaf}", file=sys.stderr)
            elif isinstance(leaf, TimeoutError):
                print(f"FAIL {TAG}: timed out after {timeout}s against {url}", file=sys.stderr)
            else:
                if os.environ.get("WARDEN_DEBUG"):
                    traceback.print_exception(leaf)
                print(f"FAIL {TAG}: {type(leaf).__name__}: {leaf}", file=sys.stderr)
        if HTTP_ERRORS:
            print(f"FAIL {TAG}: HTTP errors seen: {'; '.join(HTTP_ERRORS)}", file=sys.stderr)
        return 1
    step("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())

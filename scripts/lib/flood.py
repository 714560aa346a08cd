"""The 50 MB part of scripts/bench-memory.sh: calls the fixtures' `flood` tool through a
running Warden (modern era, one POST a call) and posts a 50 MB body, and prints, as a
JSON list, how much each raised Warden's peak resident memory (VmHWM).
    python3 scripts/lib/flood.py URL KEY WARDEN_PID"""
import json
import sys
import urllib.error
import urllib.request

URL, KEY, PID = sys.argv[1], sys.argv[2], sys.argv[3]
MB = 50
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bench-memory", "version": "1"},
}


def peak_kib():
    for line in open(f"/proc/{PID}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    sys.exit("no VmHWM in /proc/PID/status")


def post(body, tool="flood"):
    request = urllib.request.Request(URL, data=body, method="POST", headers={
        "authorization": f"Bearer {KEY}",
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": tool,
    })
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except urllib.error.URLError as error:
        # Warden answered and closed before the whole body was sent.
        if isinstance(error.reason, ConnectionError):
            return None, b""
        raise
    except ConnectionError:
        return None, b""


def call(tool, arguments):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": META}}
    status, answer = post(json.dumps(body).encode(), tool)
    answer = json.loads(answer)
    if "error" in answer and status == 503:
        return f"refused (HTTP 503, {answer['error']['code']}): {answer['error']['message']}"
    if status != 200 or "error" in answer:
        sys.exit(f"{tool} {arguments}: HTTP {status}: {answer}")
    text = answer["result"]["content"][0]["text"]
    marker = text.find("\n[truncated by Warden:")
    if marker < 0:
        return f"passed whole ({len(json.dumps(answer['result'])):,} bytes)"
    return f"cut: {marker // 1024} KiB shown, then `{text[marker + 1:]}`"


def measured(what, action):
    action(small=True)
    before = peak_kib()
    outcome = action(small=False)
    return {"what": what, "outcome": outcome, "rise_kib": peak_kib() - before}


def flood(tool, **extra):
    return lambda small: call(tool, {"mb": 1 if small else MB, **extra})


def body(small):
    status, _ = post(b" " * ((2 if small else MB) * 1_000_000))
    if status not in (413, None):
        sys.exit(f"a {MB} MB body: HTTP {status}, not 413")
    return "refused at the 1 MiB cap (HTTP 413)" if status else "refused at the 1 MiB cap (upload cut off)"


print(json.dumps([
    measured("text, stdio child", flood("stdio__flood")),
    measured("text, HTTP upstream, JSON answer", flood("http__flood")),
    measured("text, HTTP upstream, SSE answer", flood("http__flood", sse=True)),
    measured("structured content, stdio child (16 MiB message limit)",
             flood("stdio__flood", structured=True)),
    measured("request body", body),
]))

#!/usr/bin/env python3
"""An MCP server that speaks only the deprecated HTTP+SSE transport (2024-11-05), on the
official Python SDK (mcp 2.3.0), for Warden to front with `transport = "sse"`. Its one
tool, `shout`, returns its text in capitals.

  PORT=8767 interop/python/.venv/bin/python interop/python/sse_upstream.py
"""

from __future__ import annotations

import os

import uvicorn

from mcp.server import MCPServer

mcp = MCPServer("warden-sse-upstream")


@mcp.tool()
def shout(text: str) -> str:
    """Returns the text in capitals."""
    return text.upper()


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"sse upstream listening on port {port}", flush=True)
    uvicorn.run(mcp.sse_app(), host="127.0.0.1", port=port, log_level="warning")

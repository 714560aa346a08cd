#!/usr/bin/env python3
"""A modern-era (2026-07-28) MCP server on the official Python SDK (mcp 2.3.0), for Warden
to front over Streamable HTTP. Its one tool, `ask`, asks the client for a name: in the
modern era the SDK answers with an `InputRequiredResult` and resumes on the retry.

  PORT=8766 interop/python/.venv/bin/python interop/python/modern_upstream.py
"""

from __future__ import annotations

import os
from typing import Annotated

import uvicorn
from pydantic import BaseModel

from mcp.server import MCPServer
from mcp.server.mcpserver import AcceptedElicitation, Elicit, ElicitationResult, Resolve

mcp = MCPServer("warden-modern-upstream")


class Name(BaseModel):
    name: str


def ask_for_name(question: str) -> Elicit[Name]:
    return Elicit(question, Name)


@mcp.tool()
def ask(question: str, answer: Annotated[ElicitationResult[Name], Resolve(ask_for_name)]) -> str:
    """Asks the user the question and returns `<action>:<name>`."""
    if isinstance(answer, AcceptedElicitation):
        return f"accept:{answer.data.name}"
    return f"{answer.action}:"


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"modern upstream listening on port {port}", flush=True)
    uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")

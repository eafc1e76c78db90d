"""Upstream MCP server for the mcpgate interop suite, built on the official Python SDK's FastMCP.

Usage: python upstream/notes_server.py PORT [--json]

It does no authorization of its own: it is meant to sit behind mcpgate, which enforces
per-tool scopes (read_note: notes:read, write_note: notes:write, purge_notes: notes:admin).
Listens on 127.0.0.1 only; endpoint /mcp (Streamable HTTP, SSE responses unless --json).
"""

import asyncio
import sys

from mcp.server.fastmcp import Context, FastMCP

port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
json_response = "--json" in sys.argv[2:]

mcp = FastMCP(
    "interop-notes",
    instructions="Notes store used by the mcpgate interop suite.",
    host="127.0.0.1",
    port=port,
    json_response=json_response,
    log_level="WARNING",
)

NOTES: dict[str, str] = {"welcome": "hello from the notes server"}


@mcp.tool()
def read_note(name: str) -> str:
    """Read a note by name (needs notes:read behind mcpgate)."""
    return NOTES.get(name, f"no note named {name!r}")


@mcp.tool()
def write_note(name: str, text: str) -> str:
    """Create or replace a note (needs notes:write behind mcpgate)."""
    NOTES[name] = text
    return f"stored {name!r} ({len(text)} chars)"


@mcp.tool()
def purge_notes() -> str:
    """Delete every note (needs notes:admin behind mcpgate)."""
    count = len(NOTES)
    NOTES.clear()
    return f"purged {count} notes"


@mcp.tool()
def whoami_headers(ctx: Context) -> dict[str, str]:
    """Return the HTTP request headers this server received for this call."""
    request = ctx.request_context.request
    if request is None:
        return {}
    return {k.lower(): v for k, v in request.headers.items()}


@mcp.tool()
async def slow_count(ctx: Context, steps: int = 5, interval: float = 0.4) -> str:
    """Count to `steps`, sending a progress notification every `interval` seconds (~2 s by default)."""
    for i in range(1, steps + 1):
        await asyncio.sleep(interval)
        await ctx.report_progress(i, steps, f"step {i}/{steps}")
    return f"counted to {steps}"


if __name__ == "__main__":
    mcp.run(transport="streamable-http")

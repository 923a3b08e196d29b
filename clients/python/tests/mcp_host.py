"""A minimal MCP host for tests/test_mcp.py: runs `baton mcp` as its stdio
server, claims one task, says so on stdout, then idles with the session
open until it is killed.

    python mcp_host.py BATON_BIN NATS_URL AGENT TASK LEASE
"""

from __future__ import annotations

import asyncio
import sys

from mcp import Client, StdioServerParameters


async def main(baton: str, url: str, agent: str, task: str, lease: str) -> None:
    params = StdioServerParameters(
        command=baton, args=["--nats", url, "mcp", "--agent", agent, "--lease", lease]
    )
    async with Client(params) as client:
        result = await client.call_tool("claim_task", {"task_id": task})
        if result.is_error:
            print(f"error {result.content}", flush=True)
            return
        print(f"claimed {result.structured_content['epoch']}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))

"""A minimal MCP host for tests/test_mcp_http.py: connects to a `baton mcp
--http` server by URL, claims one task, opens a `subscriptions/listen`
stream (as a host that wants notifications keeps one open), says so on
stdout, then idles until it is killed.

    python mcp_http_host.py URL TASK
"""

from __future__ import annotations

import asyncio
import sys

from mcp import Client


async def main(url: str, task: str) -> None:
    async with Client(url, read_timeout_seconds=30) as client:
        result = await client.call_tool("claim_task", {"task_id": task})
        if result.is_error:
            print(f"error {result.content}", flush=True)
            return
        print(f"claimed {result.structured_content['epoch']}", flush=True)
        async with client.listen(resource_subscriptions=[f"baton://tasks/{task}"]):
            print("listening", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))

# Ported from Modal's guide "Asynchronous API usage" (modal.com/docs/guide/async): an async
# function called with .remote.aio and .map.aio from an async local entrypoint. Changed:
# `import modal` -> `import nbscale as modal`.
# Run with: nbscale run async_map.py

import asyncio

import nbscale as modal

app = modal.App("example-async")


@app.function()
async def double(x: int) -> int:
    await asyncio.sleep(0.05)
    return 2 * x


@app.local_entrypoint()
async def main():
    one = await double.remote.aio(21)
    many = [r async for r in double.map.aio(range(10))]
    print("one", one)
    print("many", many)

# Ported from Modal's guide "Input concurrency" (modal.com/docs/guide/concurrent-inputs):
# one container serves several inputs at once with @modal.concurrent. Changed:
# `import modal` -> `import nbscale as modal`; the I/O-bound request became a sleep, and
# each input reports how many ran beside it.
# Run with: nbscale run concurrent_inputs.py

import asyncio

import nbscale as modal

app = modal.App("example-concurrent-inputs")

running = {"now": 0}  # per container: inputs in progress


@app.function(max_containers=1)
@modal.concurrent(max_inputs=4)
async def fetch(i: int):
    running["now"] += 1
    peak = running["now"]
    await asyncio.sleep(0.5)
    peak = max(peak, running["now"])
    running["now"] -= 1
    return i, peak


@app.local_entrypoint()
def main():
    results = list(fetch.map(range(8)))
    print("inputs", [i for i, _ in results])
    print("most at once", max(peak for _, peak in results))

# Ported from the fan-out pattern of Modal's guides ("Job processing" and the
# FunctionCall.gather reference): spawn many calls without waiting, then gather their
# results. Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run spawn_gather.py

import nbscale as modal
from modal.functions import FunctionCall

app = modal.App("example-spawn-gather")


@app.function()
def cube(x: int) -> int:
    return x**3


@app.local_entrypoint()
def main(n: int = 12):
    calls = [cube.spawn(i) for i in range(n)]
    results = FunctionCall.gather(*calls)
    print("gathered", results)
    # a call's id is enough to fetch its result later, from anywhere
    again = modal.FunctionCall.from_id(calls[-1].object_id).get(timeout=60)
    print("again", again)

# Ported from the argument-parsing part of Modal's guide to apps and entrypoints
# (modal.com/docs/guide/apps): a local entrypoint whose parameters become command-line
# flags. Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run entrypoint_args.py --text ab --times 3 --scale 0.5 --shout

import nbscale as modal

app = modal.App("example-entrypoint-args")


@app.function()
def repeat(text: str, times: int) -> str:
    return text * times


@app.local_entrypoint()
def main(text: str, times: int = 2, scale: float = 1.5, shout: bool = False):
    """Repeat TEXT on a worker, then shout it here if asked."""
    result = repeat.remote(text, times)
    if shout:
        result = result.upper()
    print("result:", result)
    print("scaled:", scale * times)

# Ported from Modal's guide "Timeouts" (modal.com/docs/guide/timeouts): an input that runs
# past its function's timeout fails with modal.exception.FunctionTimeoutError, which the
# caller catches by type. Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run timeouts.py

import time

import nbscale as modal
from modal.exception import FunctionTimeoutError

app = modal.App("example-timeouts")


@app.function(timeout=2)
def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.local_entrypoint()
def main():
    print("slept", sleeper.remote(0.1))
    try:
        sleeper.remote(60)
    except FunctionTimeoutError:
        print("timed out")
    except modal.exception.Error as exc:  # any other error of the platform
        print("other error", type(exc).__name__, exc)

# Ported from Modal's guide "Apps, Functions, and entrypoints" (modal.com/docs/guide/apps),
# its part on running an app from a plain script: `with app.run():` around the calls, then
# `python run_from_script.py`, and a script that calls its local entrypoint itself.
# Changed: `import modal` -> `import nbscale as modal`.
# Run with: python run_from_script.py

import nbscale as modal

app = modal.App("example-run-from-script")


@app.function()
def square(x: int) -> int:
    print("squaring", x)
    return x * x


@app.local_entrypoint()
def main(n: int = 5):
    print("squares", list(square.map(range(n))))


if __name__ == "__main__":
    with modal.enable_output(), app.run():
        print("remote", square.remote(7))
        print("is_local", modal.is_local())
    main(n=6)

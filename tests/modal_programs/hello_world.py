# Ported from Modal's "Hello, world!" example (modal-labs/modal-examples,
# 01_getting_started/hello_world.py). Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run hello_world.py

import sys

import nbscale as modal

app = modal.App("example-hello-world")


# Even inputs say hello on stdout, odd ones world on stderr; each returns its square.
@app.function()
def f(i):
    if i % 2 == 0:
        print("hello", i)
    else:
        print("world", i, file=sys.stderr)
    return i * i


@app.local_entrypoint()
def main():
    # here, in this process
    print(f.local(1000))
    # once, on a worker
    print(f.remote(1000))
    # in parallel, on many workers
    total = 0
    for ret in f.map(range(20)):
        total += ret
    print(total)

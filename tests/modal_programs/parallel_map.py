# Ported from Modal's guide "Scaling out" (modal.com/docs/guide/scale): .map over inputs,
# .starmap over argument tuples, .for_each, keyword arguments shared by every call, and
# failures returned in place with return_exceptions=True. Changed: `import modal` ->
# `import nbscale as modal`.
# Run with: nbscale run parallel_map.py

import nbscale as modal

app = modal.App("example-parallel-map")


@app.function()
def my_func(a):
    return a**2


@app.function()
def add(a, b, scale=1):
    return (a + b) * scale


@app.function()
def maybe_fail(x):
    if x == 2:
        raise Exception("ohno")
    return x


@app.local_entrypoint()
def main():
    assert list(my_func.map([1, 2, 3, 4])) == [1, 4, 9, 16]
    print("map", list(my_func.map(range(8))))
    print("starmap", list(add.starmap([(1, 2), (3, 4)])))
    print("kwargs", list(add.map([1, 2], [10, 20], kwargs={"scale": 3})))
    my_func.for_each(range(5))
    print("unordered", sorted(my_func.map(range(6), order_outputs=False)))
    print("exceptions", list(maybe_fail.map(range(4), return_exceptions=True)))

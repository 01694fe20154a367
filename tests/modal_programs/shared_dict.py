# Ported from Modal's guide "Dicts" (modal.com/docs/guide/dicts): a Dict shared by the
# entrypoint and its workers, values written remotely and read here.
# Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run shared_dict.py

import nbscale as modal

app = modal.App("example-dict")
results = modal.Dict.from_name("example-results", create_if_missing=True)


@app.function()
def store(key: str, value: int) -> None:
    results[key] = value


def square(x: int) -> int:
    return x * x


@app.function()
def square_into_dict(x: int) -> None:
    results.put(f"square-{x}", square(x))


@app.local_entrypoint()
def main():
    results.clear()
    store.remote("answer", 42)
    print(results["answer"])
    list(square_into_dict.map(range(8)))
    print("squares", sorted(v for k, v in results.items() if k.startswith("square-")))
    print("length", results.len())
    modal.Dict.delete("example-results")

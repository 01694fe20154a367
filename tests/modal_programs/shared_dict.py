# Ported from Modal's guide "Dicts and Queues" (modal.com/docs/guide/dicts-and-queues): a
# Dict shared by the entrypoint and its workers. nbscale's Dict is to come, so the run
# stops at the line that makes one, saying so.
# Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run shared_dict.py  (fails: exit code 1, one line)

import nbscale as modal

app = modal.App("example-dict")
results = modal.Dict.from_name("example-results", create_if_missing=True)


@app.function()
def store(key: str, value: int) -> None:
    results[key] = value


@app.local_entrypoint()
def main():
    store.remote("answer", 42)
    print(results["answer"])

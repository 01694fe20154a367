# Ported from Modal's guide "Apps, Functions, and entrypoints" (modal.com/docs/guide/apps),
# its part on composing apps: an app split across files, joined with app.include.
# Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run composed_app.py --text "  Hello World  nbscale "

import nbscale as modal
from composed_stage import normalize, stage_app

app = modal.App("example-composed")
app.include(stage_app)


@app.function()
def count(words: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    return counts


@app.local_entrypoint()
def main(text: str = "Apple apple  Banana"):
    words = list(normalize.map(text.split()))
    print("words", words)
    print("counts", count.remote(words))
    print("tags", app.tags)

# The part that composed_app.py includes: an app of its own, in its own file, as in Modal's
# guide "Apps, Functions, and entrypoints" (modal.com/docs/guide/apps), its part on
# composing apps with app.include. Changed: `import modal` -> `import nbscale as modal`.

import nbscale as modal

stage_app = modal.App("example-composed-stage", tags={"stage": "normalize"})


@stage_app.function()
def normalize(word: str) -> str:
    return word.strip().lower()

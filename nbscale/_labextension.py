"""Where JupyterLab finds the nbscale sidebar.

The sidebar is built from ``labextension/`` (TypeScript) into ``nbscale/labextension/`` by
the wheel's build hook (``jlpm build:prod``), and the wheel installs it as
``share/jupyter/labextensions/nbscale``, where JupyterLab looks. This function is what
``jupyter labextension develop . --overwrite`` reads to link the build folder there instead,
for the developer loop described in the README.
"""

from __future__ import annotations


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "nbscale"}]

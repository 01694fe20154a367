"""nbscale answers to the name ``modal`` where Modal itself is not installed.

A Modal program ported with its one changed line, ``import nbscale as modal``, goes on to
``from modal.exception import NotFoundError`` or ``from modal import App``: Python looks
those up by module name, which ``import ... as`` does not give. So, on ``import nbscale``,
``modal``, ``modal.exception`` and ``modal.functions`` are registered as nbscale's modules,
unless a ``modal`` can be imported (Modal's own client, or a module of yours by that name),
which is then left alone: with Modal installed beside nbscale, write ``nbscale.exception``.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

MODULES = ("exception", "functions")  # Modal's submodules that nbscale has


def answer_to_modal(nbscale: ModuleType) -> bool:
    """Register ``nbscale`` (and its ``MODULES``) as ``modal`` when no ``modal`` can be
    imported; returns whether it did."""
    if "modal" in sys.modules:
        return sys.modules["modal"] is nbscale
    try:
        if importlib.util.find_spec("modal") is not None:
            return False
    except (ImportError, ValueError):
        return False
    sys.modules["modal"] = nbscale
    for name in MODULES:
        sys.modules[f"modal.{name}"] = sys.modules[f"{nbscale.__name__}.{name}"]
    return True

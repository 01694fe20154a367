"""Which view a map gets: the ``progress`` setting (``NBSCALE_PROGRESS`` or
``nbscale.config(progress=...)``), where ``auto`` means the notebook display inside a Jupyter
kernel (the setting's name for it is ``widget``), the text bar when stderr is a terminal, and
nothing otherwise (scripts piped to a file, CI).
"""

from __future__ import annotations

import sys

from .. import _config
from .live import MapView


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (without importing IPython to find out)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return getattr(shell, "kernel", None) is not None


def resolve(mode: str) -> str:
    """``widget``, ``text`` or ``off`` for a setting that may be ``auto``."""
    if mode != "auto":
        return mode
    if in_kernel():
        return "widget"
    isatty = getattr(sys.stderr, "isatty", None)
    return "text" if isatty is not None and isatty() else "off"


def open_view() -> MapView | None:
    """A new view for a map about to run, or None when progress is off."""
    mode = resolve(_config.get("progress"))
    if mode == "off":
        return None
    if mode == "widget":
        from .display import MapDisplay

        return MapDisplay()
    from .text import TextBar

    return TextBar()

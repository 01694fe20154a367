"""IPython's entry points for ``%load_ext nbscale``.

They live apart from the magics so that ``import nbscale`` does not import IPython: the
magics module is loaded only when IPython asks for the extension.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%nbscale`` line magic and the ``%%nbscale`` cell magic."""
    from ._magics import NbScaleMagics
    from ._tracebacks import install

    ipython.register_magics(NbScaleMagics)
    install()  # the magics' errors show the cell's frames (and notes, on older IPython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics again (``%unload_ext nbscale``)."""
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("nbscale", None)

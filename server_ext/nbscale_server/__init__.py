"""The nbscale control plane: broker, queue, limits, autoscaler and launchers, and the
Jupyter server extension that hosts it (``extension.NbScale``)."""

from __future__ import annotations

from typing import Any

from nbscale_runtime import __version__

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Where Jupyter finds the extension. The import is deferred so that kernels, which
    import this package for the client side, do not load jupyter_server."""
    from .extension import NbScale

    return [{"module": "nbscale_server", "app": NbScale}]

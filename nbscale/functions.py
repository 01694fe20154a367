"""Modal's module name for its function classes: with ``import nbscale as modal``,
``from modal.functions import FunctionCall`` finds nbscale's."""

from __future__ import annotations

from ._function import Function, FunctionCall, FunctionStats

__all__ = ["Function", "FunctionCall", "FunctionStats"]

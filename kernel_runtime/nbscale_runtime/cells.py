"""Running a notebook cell's code on a worker, for the ``%%nbscale`` cell magic.

It lives in the worker runtime because workers always have ``nbscale_runtime`` (and not
always ``nbscale``); the magic ships :func:`run_cell` by reference, so every cell of a
session runs on the same warm pool. The code is compiled under the file name the kernel
registered for the cell's text, with the cell's line numbers, so a remote traceback shows the
cell's own lines when the caller formats it.
"""

from __future__ import annotations

import ast
import builtins
from typing import Any, TypedDict

import cloudpickle

from .serialization import PICKLE_PROTOCOL


class CellResult(TypedDict):
    value: Any  # the value of the cell's last expression (None if it ends in a statement)
    names: dict[str, Any]  # the pulled names the cell left bound
    unpicklable: list[str]  # pulled names (or "the last expression") that could not come back


class RemoteRepr:
    """Stands for a value that could not be pickled back: shows its remote repr."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def picklable(value: Any) -> bool:
    """Whether ``value`` pickles (large buffers are not copied to find out)."""
    try:
        cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL, buffer_callback=lambda _b: False)
    except Exception:
        return False
    return True


def split_last_expression(tree: ast.Module) -> ast.Expression | None:
    """Take the cell's final expression statement off ``tree``, as IPython displays it."""
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop()
        assert isinstance(last, ast.Expr)
        return ast.Expression(last.value)
    return None


def run_cell(
    source: str,
    filename: str,
    namespace: dict[str, Any],
    pull: list[str],
    bind: tuple[str, Any] | None = None,
) -> CellResult:
    """Run ``source`` (padded with blank lines so that its line numbers are the cell's) in a
    fresh ``__main__``-like namespace holding ``namespace`` and, with ``bind``, one more
    name. Returns the last expression's value and the ``pull`` names it left bound."""
    tree = ast.parse(source, filename)
    last = split_last_expression(tree)
    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, **namespace}
    if bind is not None:
        scope[bind[0]] = bind[1]
    exec(compile(tree, filename, "exec"), scope)
    value = eval(compile(last, filename, "eval"), scope) if last is not None else None
    unpicklable = []
    if not picklable(value):
        value = RemoteRepr(repr(value))
        unpicklable.append("the last expression")
    names = {}
    for name in pull:
        if name not in scope:
            continue
        if picklable(scope[name]):
            names[name] = scope[name]
        else:
            unpicklable.append(name)
    return {"value": value, "names": names, "unpicklable": unpicklable}


def map_cell(source: str, filename: str, namespace: dict[str, Any], bind: tuple[str, Any]) -> Any:
    """``%%nbscale --map``: run the cell with one element bound; its result is the value of
    the cell's last expression (a ``RemoteRepr`` if it does not pickle), nothing else."""
    return run_cell(source, filename, namespace, [], bind)["value"]

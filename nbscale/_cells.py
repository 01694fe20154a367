"""The caller's side of running notebook cells on workers (``%%nbscale``), without IPython.

A cell becomes inputs of one function, ``nbscale_runtime.cells.run_cell``, shipped by
reference so that every cell with the same options shares one warm pool. What a cell needs
from the notebook travels with it: the names it reads (found with ``symtable``) that the
notebook has bound and that pickle. What it leaves bound comes back, by default every name
it assigns at top level. A remote error's traceback is cut to the cell's own frames, whose
lines the caller's ``linecache`` knows.
"""

from __future__ import annotations

import symtable
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from nbscale_runtime.cells import map_cell, picklable, run_cell
from nbscale_server.options import DEFAULT_TIMEOUT

from ._app import App
from ._function import Function
from ._image import Image
from ._outcomes import code_files_of


@dataclass(frozen=True)
class CellNames:
    """The global names a cell reads, and those it binds at top level."""

    used: frozenset[str]
    assigned: frozenset[str]


def _global_reads(table: symtable.SymbolTable) -> set[str]:
    """Names that nested scopes (functions, classes, comprehensions) read as globals."""
    names: set[str] = set()
    for child in table.get_children():
        names |= {s.get_name() for s in child.get_symbols() if s.is_global() and s.is_referenced()}
        names |= _global_reads(child)
    return names


def cell_names(source: str, filename: str) -> CellNames:
    """What ``source`` reads and binds; raises SyntaxError for code that does not parse."""
    top = symtable.symtable(source, filename, "exec")
    used = {s.get_name() for s in top.get_symbols() if s.is_referenced()} | _global_reads(top)
    assigned = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    return CellNames(frozenset(used), frozenset(assigned))


def namespace_for(
    user_ns: Mapping[str, Any], names: Iterable[str], hidden: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The notebook's values of ``names`` that pickle, and the names that do not. Names the
    shell itself put in the namespace (``In``, ``get_ipython``, ...) stay behind."""
    shipped: dict[str, Any] = {}
    unpicklable: list[str] = []
    for name in sorted(names):
        if name not in user_ns:
            continue
        value = user_ns[name]
        if name in hidden and hidden[name] is value:
            continue
        if picklable(value):
            shipped[name] = value
        else:
            unpicklable.append(name)
    return shipped, unpicklable


@dataclass(frozen=True)
class CellOptions:
    """Where a cell runs: the pool's resources and limits (the magic's options)."""

    gpu: str | None = None
    image: Image | None = None
    cpu: float | None = None
    memory: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_containers: int | None = None


_cell_app = App("nbscale-cells")


def cell_name(label: str, execution_count: int | None) -> str:
    """A cell's pool name: its notebook's and its number's, ``sweep.ipynb [7]``."""
    return f"{label} [{execution_count}]" if execution_count else label


def cell_function(
    options: CellOptions, shipped: Mapping[str, Any], name: str, per_element: bool = False
) -> Function:
    """The function cells with these options run as (same options, same pool: the pool
    takes the ``name`` of the cell that ran last), knowing the source files of the notebook
    functions ``shipped`` with the cell, so that their frames in a remote traceback show
    their lines. ``per_element``: ``--map``'s, whose result is the cell's value alone."""
    fn: Function = _cell_app.function(
        gpu=options.gpu,
        image=options.image,
        cpu=options.cpu,
        memory=options.memory,
        timeout=options.timeout,
        max_containers=options.max_containers,
        name=name,
    )(map_cell if per_element else run_cell)
    files = code_files_of(run_cell)
    for value in shipped.values():
        if callable(value):
            files.update(code_files_of(value))
    fn._code_files = files
    return fn


def cell_frames(tb: TracebackType | None, filename: str) -> TracebackType | None:
    """The traceback from the cell's first frame on, without the frames of nbscale and of
    the worker; None when the error came before the cell ran (the message says it all)."""
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return tb

"""Remote errors as a notebook shows them: your frames only, and where the error was raised.

nbscale's own frames on the way from a remote error to your cell (the blocking call's trip
through the background loop, the map's engine) set ``__tracebackhide__``, which IPython
honours; a ``%%nbscale`` cell's error shows the cell's own frames, as a local cell's would,
without IPython's frames for running magics (``show_cell_frames``). Neither happens with
``nbscale.config(debug=True)``. A remote exception carries a note, ``(raised remotely in f
on worker wk-..., input 3, attempt 1)``; newer IPython shells show exception notes, and
those that do not (8.12, say) are taught to here. Both are one wrapper around the running
shell's traceback formatter, installed once per shell (``install``).
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import _config

_SHOWN = "__nbscale_traceback__"  # on an exception: the traceback a shell shows for it


class _Hidden:
    """True while nbscale's frames stay out of tracebacks (``debug`` off), read when a
    traceback is shown rather than on every call (the setting may live in a file: a stat
    each time cost a remote call ~10 us)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return not _config.debug()


_HIDDEN = _Hidden()


def hidden() -> Any:
    """The value for ``__tracebackhide__``: true (when a traceback is shown) while
    nbscale's frames stay out of tracebacks."""
    return _HIDDEN


def show_cell_frames(exc: BaseException, tb: TracebackType | None) -> None:
    """Have the shell show ``tb`` (a ``%%nbscale`` cell's own frames) for ``exc``, not the
    frames of IPython's magic machinery it gains on its way up."""
    if hidden() and tb is not None:
        setattr(exc, _SHOWN, tb)
        install()


_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+)', re.MULTILINE)


def format_text(exc: BaseException) -> str:
    """``exc``'s traceback as text, as the shell names its cells: ``Cell In[7], line 3``
    rather than the file name a kernel compiles a cell under."""
    text = "".join(traceback.format_exception(exc))
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    name_of = getattr(getattr(shell, "compile", None), "format_code_name", None)
    if name_of is None:
        return text

    def named(match: re.Match[str]) -> str:
        found = name_of(match["file"])
        if not found:
            return match[0]
        return f"  {found[0]} {found[1]}, line {match['line']}"

    return _FRAME.sub(named, text)


def install() -> None:
    """Teach the running IPython shell (if any) to show the cell frames chosen by
    ``show_cell_frames`` and, where it does not already, exception notes."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    formatter = getattr(shell, "InteractiveTB", None)
    if formatter is None or getattr(formatter, "_nbscale", False):
        return
    formatter._nbscale = True
    formatter.structured_traceback = _wrap(formatter.structured_traceback, _shows_notes(formatter))


def without_ours(tb: TracebackType) -> TracebackType:
    """``tb`` without nbscale's hidden frames: IPython would still show the last one (where
    nbscale raised an error of its own, such as ``CallCancelledError``), and a line saying
    it skipped the others."""
    kept = []
    entry: TracebackType | None = tb
    while entry is not None:
        frame = entry.tb_frame
        ours = str(frame.f_globals.get("__name__", "")).startswith("nbscale.")
        if not (ours and frame.f_locals.get("__tracebackhide__")):
            kept.append(entry)
        entry = entry.tb_next
    if len(kept) == 0 or len(kept) == _length(tb):
        return tb
    rebuilt: TracebackType | None = None
    for entry in reversed(kept):
        rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    assert rebuilt is not None
    return rebuilt


def _length(tb: TracebackType | None) -> int:
    n = 0
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


def _shows_notes(formatter: Any) -> bool:
    probe = ValueError("probe")
    probe.add_note("nbscale-note-probe")
    try:
        lines = formatter.structured_traceback(ValueError, probe, None)
    except Exception:
        return True  # a formatter we do not know: leave its notes alone
    return "nbscale-note-probe" in "\n".join(map(str, lines))


def _wrap(original: Callable[..., Any], shows_notes: bool) -> Callable[..., Any]:
    def structured_traceback(
        etype: Any = None,
        value: Any = None,
        tb: Any = None,
        tb_offset: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        exc = value if value is not None else sys.exc_info()[1]
        shown = getattr(exc, _SHOWN, None)
        if shown is not None:  # a cell's own frames, from its first line
            tb, tb_offset = shown, 0
        elif isinstance(tb, TracebackType):
            tb = without_ours(tb)
        lines = original(etype, value, tb, tb_offset, *args, **kwargs)
        notes = getattr(exc, "__notes__", None)
        if not shows_notes and isinstance(lines, list) and isinstance(notes, list):
            lines = [*lines, *(str(note) for note in notes)]
        return lines

    return structured_traceback

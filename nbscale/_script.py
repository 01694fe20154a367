"""What ``nbscale run FILE.py[::NAME]`` runs: the script, imported as ``modal run`` imports
it, and the local entrypoint or function it names (or the one there is).

The script is imported as a module named after its file (``hello.py`` is ``hello``, not
``__main__``, so its ``if __name__ == "__main__":`` block does not run), with its directory
first on ``sys.path``. Without ``::NAME``, the script's one local entrypoint runs; a
script with none and a single function runs that function; anything else is an error that
lists the choices. ``::NAME`` may be ``APP.NAME`` to pick one of several apps.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ._app import App
from ._entrypoint import LocalEntrypoint
from ._function import Function
from .exceptions import InvalidError


class ScriptError(Exception):
    """The script raised an exception of its own: while it was imported, or while its
    entrypoint ran. ``error`` is that exception, shown with its traceback."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Target:
    """What runs: a local entrypoint (here) or a function (on a worker)."""

    name: str
    entrypoint: LocalEntrypoint | None = None
    function: Function | None = None

    @property
    def app(self) -> App:
        if self.entrypoint is not None:
            return self.entrypoint.app
        assert self.function is not None and self.function.app is not None
        return self.function.app

    @property
    def raw(self) -> Callable[..., Any]:
        if self.entrypoint is not None:
            return self.entrypoint.raw_f
        assert self.function is not None
        return self.function.raw_f

    @property
    def kind(self) -> str:
        return "local entrypoint" if self.entrypoint is not None else "function, on a worker"

    def call(self, *args: Any, **kwargs: Any) -> None:
        """Run it: an entrypoint here (an async one to completion), a function on a
        worker, its result dropped as ``modal run`` drops it."""
        if self.entrypoint is not None:
            self.entrypoint(*args, **kwargs)
        else:
            assert self.function is not None
            self.function.remote(*args, **kwargs)


def split_ref(ref: str) -> tuple[str, str | None]:
    """``FILE.py::NAME`` into the file (or module) and the name (None when not given)."""
    source, sep, name = ref.partition("::")
    if not sep and ":" in ref and not os.path.exists(ref):
        raise InvalidError(f"no file {ref}: did you mean '::' instead of ':'?")
    if sep and not name:
        raise InvalidError(f"{ref}: name the entrypoint or function after '::'")
    return source, name or None


def load(source: str, *, as_module: bool = False) -> ModuleType:
    """Import ``source`` (a file ``FILE.py``, or a module's dotted name, which
    ``as_module`` insists on) as ``modal run`` does. An exception the script raises is a
    ``ScriptError``."""
    if "" not in sys.path:
        sys.path.insert(0, "")  # the working directory, as for `python -m`
    if as_module and (source.endswith(".py") or os.sep in source):
        raise InvalidError(f"-m takes a module's dotted name, not a file: {source}")
    if as_module or (not source.endswith(".py") and os.sep not in source):
        try:
            return importlib.import_module(source)
        except ModuleNotFoundError as exc:
            if exc.name is not None and source.startswith(exc.name):
                raise InvalidError(f"no file or module {source}") from None
            raise ScriptError(exc) from exc
        except Exception as exc:
            raise ScriptError(exc) from exc
    path = os.path.abspath(source)
    if not os.path.isfile(path):
        raise InvalidError(f"no file {source}")
    name = inspect.getmodulename(path) or os.path.basename(path)
    if name in sys.modules or name in sys.stdlib_module_names:
        raise InvalidError(
            f"{source}: a module named {name!r} exists already (imported here, or in the "
            "standard library), which the script would hide: rename the file"
        )
    sys.path.insert(0, os.path.dirname(path))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ScriptError(exc) from exc
    return module


def apps_of(module: ModuleType) -> dict[str, App]:
    """The script's apps, by the name of a variable that holds each."""
    found: dict[str, App] = {}
    for var, value in vars(module).items():
        if isinstance(value, App) and value not in found.values():
            found[var] = value
    return found


def _candidates(apps: dict[str, App]) -> list[tuple[str, Target]]:
    """Every entrypoint and function of ``apps``, each with the name ``APP.NAME`` picks it
    by, entrypoints first."""
    found = [
        (f"{var}.{name}", Target(name, entrypoint=entrypoint))
        for var, app in apps.items()
        for name, entrypoint in app.registered_entrypoints.items()
    ]
    functions = [
        (var, name, function)
        for var, app in apps.items()
        for name, function in app.registered_functions.items()
    ]
    functions.sort(key=lambda row: row[2].app is not apps[row[0]])  # by its own app first
    seen: set[int] = set()  # a function of an included app is listed once
    for var, name, function in functions:
        if id(function) not in seen:
            seen.add(id(function))
            found.append((f"{var}.{name}", Target(name, function=function)))
    return found


def choose(module: ModuleType, name: str | None, source: str) -> Target:
    """The entrypoint or function of ``module`` that ``name`` (``NAME`` or ``APP.NAME``)
    names, or the one there is; an ``InvalidError`` that lists the choices otherwise."""
    apps = apps_of(module)
    if not apps:
        raise InvalidError(
            f"{source} defines no app: it needs `app = nbscale.App(...)` (or modal.App, "
            "with `import nbscale as modal`) at module level"
        )
    candidates = _candidates(apps)
    if name is not None:
        named = [t for full, t in candidates if name in (full, t.name)]
        if len(named) == 1:
            return named[0]
        if named:  # the same name in several apps
            what = f"{source} has {len(named)} of the name {name!r}"
            raise InvalidError(_choices(what, source, [c for c in candidates if c[1] in named]))
        if "." in name and name.partition(".")[0] not in apps:
            app_var = name.partition(".")[0]
            raise InvalidError(f"{source} has no app {app_var!r} (apps: {', '.join(apps)})")
        missing = f"{source} has no entrypoint or function {name!r}"
        raise InvalidError(_choices(missing, source, candidates))
    entrypoints = [t for _, t in candidates if t.entrypoint is not None]
    functions = [t for _, t in candidates if t.function is not None]
    if len(entrypoints) == 1:
        return entrypoints[0]
    if not entrypoints and len(functions) == 1:
        return functions[0]
    if not candidates:
        raise InvalidError(f"{source}: its app has no entrypoint or function to run")
    counts = _count(len(entrypoints), "local entrypoint"), _count(len(functions), "function")
    what = f"{source} has {counts[0]} and {counts[1]}"
    raise InvalidError(_choices(what, source, candidates))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _choices(what: str, source: str, candidates: list[tuple[str, Target]]) -> str:
    """``what``, then each choice on a line of its own: its name (``APP.NAME`` where two
    apps have the name) and what it is."""
    short = [t.name for _, t in candidates]
    names = [full if short.count(t.name) > 1 else t.name for full, t in candidates]
    kinds = [
        "local entrypoint" if t.entrypoint is not None else "function, runs on a worker"
        for _, t in candidates
    ]
    width = max((len(n) for n in names), default=0)
    example = names[0] if names else "NAME"
    lines = [f"{what}: name the one to run, e.g. nbscale run {source}::{example}"]
    lines += [f"{n:<{width}}  ({kind})" for n, kind in zip(names, kinds, strict=True)]
    return "\n".join(lines)

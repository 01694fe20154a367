"""Pickling on the caller's side, with errors that name what could not be pickled."""

from __future__ import annotations

import hashlib
import inspect
import os
import site
import sys
import sysconfig
import types
from typing import Any

import cloudpickle

from nbscale_runtime.serialization import PICKLE_PROTOCOL, PayloadWriter, TooLarge

from ._kernel_env import OWN_MODULES
from .exceptions import SerializationError


def _describe(value: Any) -> str:
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def _first_unpicklable(named: list[tuple[str, Any]]) -> tuple[str, Any, Exception] | None:
    for name, value in named:
        if isinstance(value, types.ModuleType):
            continue
        try:
            cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
        except Exception as exc:
            return name, value, exc
    return None


def send_source(fn: Any) -> None:
    """Modal's ``include_source``: the module that defines ``fn`` (its top-level package)
    travels with it, pickled by value, so that workers need not have it (a script that
    ``nbscale run`` imports, a package of yours). Functions of ``__main__`` and of
    notebooks travel so already; installed packages, the standard library and nbscale's
    own are left to the worker to import."""
    top = (getattr(fn, "__module__", None) or "__main__").partition(".")[0]
    if top == "__main__" or top in sys.stdlib_module_names or top in OWN_MODULES:
        return
    module = sys.modules.get(top)
    path = getattr(module, "__file__", None)
    if module is None or path is None or _installed(path):
        return
    cloudpickle.register_pickle_by_value(module)


def _installed(path: str) -> bool:
    """Whether ``path`` lies in this environment's or the user's site-packages, or in the
    standard library."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(root) + os.sep) for root in roots)


def pickle_function(fn: Any) -> tuple[bytes, str]:
    """The function's pickle and its content id (``fn-`` + hash)."""
    try:
        data = cloudpickle.dumps(fn, protocol=PICKLE_PROTOCOL)
    except Exception as exc:
        raise SerializationError(_explain_function(fn, exc)) from exc
    return data, "fn-" + hashlib.sha256(data).hexdigest()[:16]


def _explain_function(fn: Any, exc: Exception) -> str:
    name = getattr(fn, "__qualname__", repr(fn))
    named: list[tuple[str, Any]] = []
    try:
        found = inspect.getclosurevars(fn)
        named += [(f"closure variable {k!r}", v) for k, v in found.nonlocals.items()]
        named += [(f"global {k!r}", v) for k, v in found.globals.items()]
    except (TypeError, ValueError):
        pass
    named += [(f"default of {k!r}", p.default) for k, p in _parameters(fn)]
    culprit = _first_unpicklable(named)
    if culprit is None:
        return f"cannot pickle function {name}: {exc}"
    what, value, err = culprit
    return (
        f"cannot pickle function {name}: its {what} ({_describe(value)}) cannot be pickled: "
        f"{err}. Create it inside the function, or pass what it needs as arguments."
    )


def _parameters(fn: Any) -> list[tuple[str, inspect.Parameter]]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    return [(k, p) for k, p in params.items() if p.default is not inspect.Parameter.empty]


def add_input(
    writer: PayloadWriter,
    index: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    limit: int | None = None,
) -> tuple[int, int, int]:
    """Pickle one input's ``(args, kwargs)`` into ``writer``; SerializationError names the
    argument that cannot be pickled, ``TooLarge`` says by how much it is over ``limit``
    bytes."""
    try:
        return writer.add((args, kwargs), limit)
    except TooLarge:
        raise
    except Exception as exc:
        named = [(f"argument {i}", a) for i, a in enumerate(args)]
        named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        culprit = _first_unpicklable(named)
        where = f"input {index}"
        if culprit is None:
            raise SerializationError(f"cannot pickle the arguments of {where}: {exc}") from exc
        what, value, err = culprit
        raise SerializationError(
            f"cannot pickle {what} of {where} ({_describe(value)}): {err}"
        ) from exc

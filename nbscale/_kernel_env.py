"""What this kernel has installed, so a worker image can mirror it.

A function pickled here runs in a container with its own Python: cloudpickle needs the same
Python minor version there, and the libraries the function uses should be the very versions
it was written against. This module finds which distributions a function uses (the modules
it references, imports inside its body, and the classes of the objects it closes over) and
pins them, with the requirements they pull in, to the versions installed here.
"""

from __future__ import annotations

import dis
import functools
import importlib.metadata as metadata
import re
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

import cloudpickle

# What every worker needs (nbscale_runtime's dependencies), and what is mirrored whenever the
# kernel has it because notebook code so often passes its objects around.
RUNTIME_DISTRIBUTIONS = ("pyzmq", "cloudpickle", "tblib")
MIRRORED_WHEN_PRESENT = ("numpy", "nvidia-ml-py")
# Client and control plane only; the runtime is copied into images from its source.
OWN_MODULES = frozenset({"nbscale", "nbscale_server", "nbscale_runtime"})
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def python_minor() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _requirements(distribution: str) -> list[str]:
    """Names of what ``distribution`` requires here: optional extras and requirements for
    other environments (``; implementation_name == "pypy"``) left out."""
    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    names = []
    for line in requires:
        match = _NAME.match(line)
        if match and _applies(line.partition(";")[2]):
            names.append(match.group(1))
    return names


def _applies(marker: str) -> bool:
    if not marker.strip():
        return True
    if "extra" in marker:
        return False
    from packaging.markers import InvalidMarker, Marker

    try:
        return Marker(marker).evaluate()
    except InvalidMarker:
        return True


def pinned_closure(distributions: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """``name==version`` for each installed distribution and everything it requires that is
    installed here, sorted; ``exclude`` names ones pinned elsewhere. Requirements this
    kernel lacks are left to pip (they were optional here, e.g. for another platform)."""
    skip = {_canonical(n) for n in exclude}
    pins: dict[str, str] = {}
    todo = list(distributions)
    while todo:
        name = todo.pop()
        key = _canonical(name)
        if key in pins or key in skip:
            continue
        version = installed_version(name)
        if version is None:
            continue
        pins[key] = f"{metadata.metadata(name)['Name']}=={version}"
        todo += _requirements(name)
    return sorted(pins.values(), key=str.lower)


@functools.lru_cache(maxsize=1)
def _distributions_by_module() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def distributions_used_by(fn: Any) -> list[str]:
    """The installed distributions whose modules ``fn`` needs on a worker."""
    modules = modules_used_by(fn)
    if not modules:  # spares the scan of every installed distribution (about 0.1 s)
        return []
    by_module = _distributions_by_module()
    found: set[str] = set()
    for module in modules:
        found.update(by_module.get(module, []))
    return sorted(found, key=str.lower)


def modules_used_by(fn: Any) -> set[str]:
    """Top-level names of the modules a worker must import to run ``fn``: those cloudpickle
    will pickle by reference, found through the globals, closures and defaults of every
    function pickled by value, and the imports inside their bodies. Standard library and
    nbscale's own packages are left out."""
    found: set[str] = set()
    seen: set[int] = set()
    todo: list[Any] = [fn]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.ModuleType):
            found.add(obj.__name__)
        elif isinstance(obj, types.FunctionType):
            if _by_reference(obj):
                found.add(obj.__module__)
                continue
            todo += _referenced(obj, found)
        elif isinstance(obj, types.MethodType):
            todo += [obj.__func__, obj.__self__]
        elif isinstance(obj, functools.partial):
            todo += [obj.func, obj.args, obj.keywords]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo += list(obj)[:100]
        elif isinstance(obj, dict):
            todo += list(obj.values())[:100]
        else:
            cls = obj if isinstance(obj, type) else type(obj)
            if _by_reference(cls):
                found.add(cls.__module__)
    tops = {name.partition(".")[0] for name in found if name}
    return {m for m in tops if m not in sys.stdlib_module_names and m not in OWN_MODULES}


def _by_reference(obj: Any) -> bool:
    """Whether cloudpickle pickles a function or class by reference (a name the worker
    imports) rather than by value (code and all), as it decides: by reference when it is
    found under its module and qualified name, and its module is not registered by value
    (``cloudpickle.register_pickle_by_value``) nor ``__main__``."""
    module_name = getattr(obj, "__module__", None)
    if module_name in (None, "__main__", "builtins"):
        return False
    registered: set[str] = getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", set())
    if any(module_name == m or module_name.startswith(m + ".") for m in registered):
        return False
    target: Any = sys.modules.get(module_name)
    for part in getattr(obj, "__qualname__", "<locals>").split("."):
        target = getattr(target, part, None)
    return target is obj


def _referenced(fn: types.FunctionType, imports: set[str]) -> list[Any]:
    """What a function pickled by value drags along; adds the modules it imports to
    ``imports``."""
    refs: list[Any] = []
    names: set[str] = set()
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        imports.update(
            str(i.argval) for i in dis.get_instructions(code) if i.opname == "IMPORT_NAME"
        )
    refs += [fn.__globals__[n] for n in names if n in fn.__globals__]
    refs += [cell.cell_contents for cell in fn.__closure__ or () if _filled(cell)]
    refs += list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).values())
    return refs


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True

"""The tag each worker image was built under in this process, and how it reaches a worker.

A container cannot build images (no Docker socket in it, on purpose), so a function that
declares its own ``image=`` and is called from code on a Docker worker needs its image
built beforehand. The kernel does it: registering a function for Docker workers also builds
the images of the functions and classes its code calls (``images_called_by``), and an
``Image`` pickled with that code carries the tag it was built under (``Image.__reduce__``),
which the worker's client then sends (``tag_of``). A function whose image was not built
where its caller's code came from is refused with an error saying what to do.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._image import Image

_TAGS: dict[Image, str] = {}


def remember(image: Image, tag: str) -> None:
    """``image`` was built (or found built) under ``tag``."""
    _TAGS[image] = tag


def tag_of(image: Image) -> str | None:
    """The tag ``image`` was built under here, or by the kernel that sent it here."""
    return _TAGS.get(image)


def restore(image: Image, tag: str | None) -> Image:
    """Unpickling an image: it brings the tag it was built under, if it was."""
    if tag is not None:
        _TAGS.setdefault(image, tag)
    return image


def images_called_by(raw: Callable[..., Any]) -> list[Image]:
    """The images declared by the nbscale functions and classes that ``raw``'s code names
    (its globals and closure, in nested functions too), each once."""
    from ._cls import Cls, Obj
    from ._function import Function

    found: list[Image] = []
    for value in _referenced(raw):
        if isinstance(value, Obj):  # an object of a class: Model(size="large")
            value = value.__dict__.get("_cls")
        image = value.image if isinstance(value, Function | Cls) else None
        if image is not None and image not in found:
            found.append(image)
    return found


def _referenced(raw: Callable[..., Any]) -> Iterator[Any]:
    code = getattr(raw, "__code__", None)
    if not isinstance(code, types.CodeType):
        return
    scope = getattr(raw, "__globals__", {})
    for name in _names(code):
        if name in scope:
            yield scope[name]
    for cell in getattr(raw, "__closure__", None) or ():
        try:
            yield cell.cell_contents
        except ValueError:  # an empty cell
            continue


def _names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)

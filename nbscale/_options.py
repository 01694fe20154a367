"""A function's settings as the API takes them (``@app.function``, ``with_options``,
``@nbscale.concurrent``) into one validated ``FunctionOptions``; a bad one is an
``InvalidError`` naming it."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from nbscale_server.options import FunctionOptions, slurm_fields
from nbscale_server.queue import RetryPolicy

from ._image import Image
from ._retries import Retries
from ._volume import check_volumes
from .exceptions import InvalidError

# The API's names: the options' fields, less those it derives, with the slurm_* fields as
# one ``slurm={...}`` (they mean something to Slurm workers alone).
_FIELDS = {f.name for f in dataclasses.fields(FunctionOptions)}
# ``secrets`` is the control plane's digest of the values, which travel apart (``Secret``).
_SETTINGS = {n for n in _FIELDS if not n.startswith("slurm_")} - {"is_async", "variant", "secrets"}
_SETTINGS.add("slurm")


def function_options(
    raw: Callable[..., Any] | None,
    settings: dict[str, Any],
    base: FunctionOptions | None = None,
    *,
    variant: bool = False,
) -> FunctionOptions:
    """``base`` (default: the defaults) with ``settings`` applied; ``retries`` may be an int
    or an ``nbscale.Retries``, ``slurm`` a dict of Slurm job options (those it names
    change). ``raw`` is the function (None: only check the settings);
    ``variant``: the options of a ``with_options`` variant."""
    unknown = set(settings) - _SETTINGS
    if unknown:
        raise InvalidError(f"unknown function setting(s): {', '.join(sorted(unknown))}")
    changes = dict(settings)
    slurm = changes.pop("slurm", None)
    if slurm is not None:
        try:
            changes.update(slurm_fields(slurm))
        except ValueError as exc:
            raise InvalidError(str(exc)) from None
    if "volumes" in changes:
        changes["volumes"] = check_volumes(changes["volumes"], "volumes")
    if "retries" in changes:
        parsed = Retries.parse(changes["retries"])
        changes["retries"] = parsed.policy() if parsed is not None else RetryPolicy()
    if (
        (inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw))
        and changes.get("retries") is not None
        and changes["retries"].max_retries > 0
    ):
        name = getattr(raw, "__qualname__", "a generator")
        raise InvalidError(
            f"{name} is a generator function: generators cannot be retried (the values they "
            "yielded already reached the caller)"
        )
    changes["is_async"] = inspect.iscoroutinefunction(raw)
    changes["variant"] = variant or (base is not None and base.variant)
    try:
        return dataclasses.replace(base or FunctionOptions(), **changes)
    except ValueError as exc:
        raise InvalidError(str(exc)) from None


def check_image(image: object) -> Image | None:
    """The ``image=`` setting: an ``nbscale.Image`` or None (built into a tag later)."""
    if image is not None and not isinstance(image, Image):
        raise InvalidError(f"image must be an nbscale.Image, got {image!r}")
    return image

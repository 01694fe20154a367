"""``App`` and ``@app.function``: declaring functions and their pools' settings."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from nbscale_runtime.batching import ATTRIBUTE as BATCHED
from nbscale_server.options import DEFAULT_TIMEOUT

from ._cls import Cls, make_cls
from ._function import Function
from ._image import Image
from ._options import check_image, function_options
from ._retries import Retries
from .exceptions import InvalidError


class App:
    """A named group of functions, as in Modal: ``app = nbscale.App("sweep")``."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "default"
        self.registered_functions: dict[str, Function] = {}
        self.registered_classes: dict[str, Cls] = {}

    def __repr__(self) -> str:
        return f"<nbscale.App {self.name!r}>"

    def function(
        self,
        _fn: Callable[..., Any] | None = None,
        *,
        max_containers: int | None = None,
        min_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
        retries: int | Retries | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        cpu: float | None = None,
        memory: int | None = None,
        gpu: str | list[str] | None = None,
        image: Image | None = None,
        name: str | None = None,
    ) -> Any:
        """Decorator: run this function on an autoscaled pool of workers.

        Use it bare (``@app.function``) or with Modal's settings: ``max_containers``,
        ``min_containers``, ``buffer_containers``, ``scaledown_window`` (seconds, default 60),
        ``retries`` (an int or ``nbscale.Retries``), ``timeout`` (seconds per attempt,
        default 300), the resources ``cpu``, ``memory`` (MiB) and ``gpu`` (``"any"``,
        ``"A100"``, ``"H100:2"`` or a list of fallbacks), and the ``image`` Docker workers
        run in (an ``nbscale.Image``; default ``Image.from_kernel`` with what the function
        uses). Resources and image apply to Docker workers."""
        settings = {
            "max_containers": max_containers,
            "min_containers": min_containers,
            "buffer_containers": buffer_containers,
            "scaledown_window": scaledown_window,
            "retries": retries,
            "timeout": timeout,
            "cpu": cpu,
            "memory": memory,
            "gpu": gpu,
        }
        check_image(image)

        def wrap(raw: Callable[..., Any]) -> Function:
            if isinstance(raw, Function):
                raise InvalidError(f"{raw.name} is already an nbscale Function")
            if inspect.isclass(raw):
                raise TypeError("@app.function cannot decorate a class")
            if not callable(raw):
                raise TypeError(f"@app.function needs a function, got {raw!r}")
            concurrency = getattr(raw, "__nbscale_concurrent__", {})
            batched = getattr(raw, BATCHED, None)
            if batched and concurrency:
                raise InvalidError(f"{raw.__qualname__}: @batched and @concurrent do not combine")
            batching = {"max_inputs": batched[0]} if batched else {}
            fn_name: str = name or getattr(raw, "__qualname__", None) or repr(raw)
            options = function_options(raw, {**settings, **concurrency, **batching})
            fn = Function(raw, fn_name, options, image)
            self.registered_functions[fn_name] = fn
            return fn

        return wrap(_fn) if _fn is not None else wrap

    def cls(
        self,
        _cls: type | None = None,
        *,
        max_containers: int | None = None,
        min_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
        retries: int | Retries | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        startup_timeout: float | None = None,
        cpu: float | None = None,
        memory: int | None = None,
        gpu: str | list[str] | None = None,
        image: Image | None = None,
    ) -> Any:
        """Decorator: serve this class on autoscaled pools, one per set of its
        ``nbscale.parameter()`` values. Each worker builds one instance and runs its
        ``@nbscale.enter()`` methods before its first input (within ``startup_timeout``
        seconds, default ``timeout``), its ``@nbscale.method()`` methods on inputs, and its
        ``@nbscale.exit()`` methods when it stops. The settings are ``@app.function``'s."""
        settings = {
            "max_containers": max_containers,
            "min_containers": min_containers,
            "buffer_containers": buffer_containers,
            "scaledown_window": scaledown_window,
            "retries": retries,
            "timeout": timeout,
            "cpu": cpu,
            "memory": memory,
            "gpu": gpu,
        }
        check_image(image)

        def wrap(user_cls: type) -> Cls:
            made = make_cls(user_cls, settings, image, startup_timeout)
            self.registered_classes[made.name] = made
            return made

        return wrap(_cls) if _cls is not None else wrap


def batched(*, max_batch_size: int, wait_ms: int) -> Callable[[Any], Any]:
    """Dynamic batching: the function (or ``@app.cls`` method) takes lists and returns a list
    as long, one result per input; callers still pass single inputs (``.remote(x)``,
    ``.map(xs)``). A worker runs a batch when ``max_batch_size`` inputs wait (at most 1000)
    or when the oldest has waited ``wait_ms`` milliseconds (at most 600,000)."""
    if not isinstance(max_batch_size, int) or not 1 <= max_batch_size <= 1000:
        raise InvalidError(f"max_batch_size must be an int from 1 to 1000, got {max_batch_size!r}")
    if not isinstance(wait_ms, int) or not 0 <= wait_ms <= 600_000:
        raise InvalidError(f"wait_ms must be an int from 0 to 600000, got {wait_ms!r}")

    def wrap(fn: Any) -> Any:
        raw = fn.raw_f if isinstance(fn, Function) else fn
        if inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw):
            raise InvalidError(f"{raw.__qualname__}: a @batched function cannot be a generator")
        defaults = [
            p.name
            for p in inspect.signature(raw).parameters.values()
            if p.default is not inspect.Parameter.empty
        ]
        if defaults:
            raise InvalidError(
                f"{raw.__qualname__}: a @batched function takes no default arguments "
                f"({', '.join(defaults)} has one): each argument is a list of the batch's values"
            )
        setattr(raw, BATCHED, (max_batch_size, wait_ms))
        if isinstance(fn, Function):
            return fn._with_settings({"max_inputs": max_batch_size})
        return fn

    return wrap


def concurrent(*, max_inputs: int, target_inputs: int | None = None) -> Callable[[Any], Any]:
    """Let one worker run up to ``max_inputs`` inputs at once (threads for sync functions,
    asyncio tasks for async ones); the autoscaler aims for ``target_inputs`` per worker.
    Put it under ``@app.function``."""
    settings = {"max_inputs": max_inputs, "target_inputs": target_inputs}
    function_options(None, settings)  # checked now, by the rules of every setting

    def wrap(fn: Any) -> Any:
        if isinstance(fn, Function):
            return fn._with_settings(settings)
        fn.__nbscale_concurrent__ = settings
        return fn

    return wrap

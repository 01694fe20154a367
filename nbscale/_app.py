"""``App`` and ``@app.function``: declaring functions and their pools' settings."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from nbscale_server.autoscaler import AutoscalerSettings
from nbscale_server.gpus import GpuError, parse_gpu
from nbscale_server.launchers.slurm_job import check_function_options

from ._function import Function
from ._image import Image
from ._retries import Retries
from .exceptions import InvalidError

_MAX_TIMEOUT = 24 * 3600


def validate_options(options: dict[str, Any], raw: Callable[..., Any]) -> dict[str, Any]:
    """Check settings the way Modal does and return them in their wire form."""
    out = dict(options)
    timeout = out.get("timeout")
    if timeout is None or isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidError(f"timeout must be a number of seconds, got {timeout!r}")
    if not 0 < timeout <= _MAX_TIMEOUT:
        raise InvalidError(f"timeout must be between 0 and {_MAX_TIMEOUT} s, got {timeout}")
    retries = out.get("retries")
    if isinstance(retries, dict):
        retries = Retries(**retries)
    parsed = Retries.parse(retries)
    out["retries"] = parsed.as_dict() if parsed else None
    try:
        AutoscalerSettings.from_options(out)
    except ValueError as exc:
        raise InvalidError(str(exc)) from None
    max_inputs, target = out.get("max_inputs") or 1, out.get("target_inputs")
    if not isinstance(max_inputs, int) or max_inputs < 1:
        raise InvalidError(f"max_inputs must be an int >= 1, got {max_inputs!r}")
    if target is not None and (not isinstance(target, int) or not 1 <= target <= max_inputs):
        raise InvalidError(f"target_inputs must be an int between 1 and max_inputs, got {target!r}")
    _check_resources(out)
    out["is_async"] = inspect.iscoroutinefunction(raw)
    return out


def _check_resources(options: dict[str, Any]) -> None:
    """cpu, memory, gpu and image: used by Docker workers, checked for everyone."""
    cpu, memory = options.get("cpu"), options.get("memory")
    if cpu is not None and (isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or cpu <= 0):
        raise InvalidError(f"cpu must be a number of cores > 0, got {cpu!r}")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int)):
        raise InvalidError(f"memory must be an int of MiB, got {memory!r}")
    if memory is not None and memory < 6:  # Docker's own minimum
        raise InvalidError(f"memory must be at least 6 MiB, got {memory}")
    try:
        parse_gpu(options.get("gpu"))
    except GpuError as exc:
        raise InvalidError(str(exc)) from None
    if options.get("slurm") is not None:
        try:
            check_function_options(options["slurm"])
        except ValueError as exc:
            raise InvalidError(str(exc)) from None
    image = options.get("image")
    if image is not None and not isinstance(image, Image):
        raise InvalidError(f"image must be an nbscale.Image, got {image!r}")


class App:
    """A named group of functions, as in Modal: ``app = nbscale.App("sweep")``."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "default"
        self.registered_functions: dict[str, Function] = {}

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
        timeout: float = 300,
        cpu: float | None = None,
        memory: int | None = None,
        gpu: str | list[str] | None = None,
        image: Image | None = None,
        name: str | None = None,
        slurm: dict[str, Any] | None = None,
    ) -> Any:
        """Decorator: run this function on an autoscaled pool of workers.

        Use it bare (``@app.function``) or with Modal's settings: ``max_containers``,
        ``min_containers``, ``buffer_containers``, ``scaledown_window`` (seconds, default 60),
        ``retries`` (an int or ``nbscale.Retries``), ``timeout`` (seconds per attempt,
        default 300), the resources ``cpu``, ``memory`` (MiB) and ``gpu`` (``"any"``,
        ``"A100"``, ``"H100:2"`` or a list of fallbacks), and the ``image`` Docker workers
        run in (an ``nbscale.Image``; default ``Image.from_kernel`` with what the function
        uses). Resources and image apply to Docker workers; resources and ``slurm`` (a
        dict of ``partition``, ``account``, ``qos``, ``time``, ``sbatch_args``,
        ``drain_seconds``, over the control plane's settings) to Slurm workers."""
        options = {
            "max_containers": max_containers,
            "min_containers": min_containers,
            "buffer_containers": buffer_containers,
            "scaledown_window": scaledown_window,
            "retries": retries,
            "timeout": timeout,
            "cpu": cpu,
            "memory": memory,
            "gpu": gpu,
            "image": image,
            "slurm": slurm,
        }

        def wrap(raw: Callable[..., Any]) -> Function:
            if isinstance(raw, Function):
                raise InvalidError(f"{raw.name} is already an nbscale Function")
            if inspect.isclass(raw):
                raise TypeError("@app.function cannot decorate a class")
            if not callable(raw):
                raise TypeError(f"@app.function needs a function, got {raw!r}")
            concurrency = getattr(raw, "__nbscale_concurrent__", {})
            fn_name: str = name or getattr(raw, "__qualname__", None) or repr(raw)
            fn = Function(raw, fn_name, validate_options({**options, **concurrency}, raw))
            self.registered_functions[fn_name] = fn
            return fn

        return wrap(_fn) if _fn is not None else wrap


def concurrent(*, max_inputs: int, target_inputs: int | None = None) -> Callable[[Any], Any]:
    """Let one worker run up to ``max_inputs`` inputs at once (threads for sync functions,
    asyncio tasks for async ones); the autoscaler aims for ``target_inputs`` per worker.
    Put it under ``@app.function``."""
    if not isinstance(max_inputs, int) or max_inputs < 1:
        raise InvalidError(f"max_inputs must be an int >= 1, got {max_inputs!r}")
    if target_inputs is not None and not 1 <= target_inputs <= max_inputs:
        raise InvalidError("target_inputs must be between 1 and max_inputs")
    settings = {"max_inputs": max_inputs, "target_inputs": target_inputs}

    def wrap(fn: Any) -> Any:
        if isinstance(fn, Function):
            return fn.with_options(**settings)
        fn.__nbscale_concurrent__ = settings
        return fn

    return wrap

"""``App`` and ``@app.function``: declaring functions and their pools' settings."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from nbscale_server.options import DEFAULT_TIMEOUT

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
        slurm: dict[str, Any] | None = None,
    ) -> Any:
        """Decorator: run this function on an autoscaled pool of workers.

        Use it bare (``@app.function``) or with Modal's settings: ``max_containers``,
        ``min_containers``, ``buffer_containers``, ``scaledown_window`` (seconds, default 60),
        ``retries`` (an int or ``nbscale.Retries``), ``timeout`` (seconds per attempt,
        default 300), the resources ``cpu``, ``memory`` (MiB) and ``gpu`` (``"any"``,
        ``"A100"``, ``"H100:2"`` or a list of fallbacks), and the ``image`` Docker workers
        run in (an ``nbscale.Image``; default ``Image.from_kernel`` with what the function
        uses). Resources and image apply to Docker workers; resources and ``slurm`` (a dict
        of ``partition``, ``account``, ``qos``, ``time``, ``sbatch_args``, ``drain_seconds``,
        over the control plane's ``slurm_*`` settings) to Slurm workers."""
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
            "slurm": slurm,
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
            fn_name: str = name or getattr(raw, "__qualname__", None) or repr(raw)
            options = function_options(raw, {**settings, **concurrency})
            fn = Function(raw, fn_name, options, image)
            self.registered_functions[fn_name] = fn
            return fn

        return wrap(_fn) if _fn is not None else wrap


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

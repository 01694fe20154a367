"""``App``, ``@app.function`` and ``@app.local_entrypoint``: declaring functions, their
pools' settings and the entrypoint that starts the work.

An app holds defaults that each of its functions inherits unless the function says
otherwise (``image``, ``include_source``), and ``secrets``/``volumes`` that its functions
add to their own (a function's secret overrides the app's keys, its volume the app's at the
same path), as on Modal. Modal's keywords that nbscale cannot honour are refused with the
reason (``_unsupported.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, NoReturn

from nbscale_runtime.batching import ATTRIBUTE as BATCHED
from nbscale_server.options import DEFAULT_TIMEOUT

from ._aio import aio_method
from ._app_run import AppRun
from ._cls import Cls, make_cls
from ._entrypoint import LocalEntrypoint
from ._function import Function
from ._image import Image
from ._options import check_image, function_options
from ._pickling import send_source
from ._retries import Retries
from ._secret import Secret, check_secrets
from ._unsupported import check_keywords, not_supported
from ._volume import Volume, check_volumes
from .exceptions import InvalidError


class App:
    """A named group of functions, as in Modal: ``app = nbscale.App("sweep")``.

    ``image`` is the default worker image of its functions; ``include_source`` (default
    None, meaning True) sends the module that defines a function along with it, so that
    workers need not have it; ``secrets`` (``nbscale.Secret``) and ``volumes`` (``{path:
    nbscale.Volume}``) are given to every function's workers. ``tags`` are kept."""

    def __init__(
        self,
        name: str | None = None,
        *,
        image: Image | None = None,
        include_source: bool | None = None,
        secrets: Sequence[Secret] | None = None,
        volumes: Mapping[str | PurePosixPath, Volume] | None = None,
        tags: Mapping[str, str] | None = None,
        **modal_only: Any,
    ) -> None:
        check_keywords(modal_only, "nbscale.App")
        if name is not None and not isinstance(name, str):
            raise InvalidError(f"an app's name must be a string, got {name!r}")
        if include_source is not None and not isinstance(include_source, bool):
            raise InvalidError(f"include_source must be True or False, got {include_source!r}")
        self.name = name or "default"
        self.image = check_image(image)
        self.include_source = include_source is not False  # None (Modal's default): True
        self.secrets = check_secrets(secrets, "nbscale.App")
        check_volumes(volumes, "nbscale.App")
        self.volumes = {str(path): v for path, v in (volumes or {}).items()}
        self.tags = dict(tags or {})
        self.registered_functions: dict[str, Function] = {}
        self.registered_classes: dict[str, Cls] = {}
        self.deployed: dict[str, Any] | None = None  # what app.deploy() registered
        self.registered_entrypoints: dict[str, LocalEntrypoint] = {}
        self.running: AppRun | None = None  # set while ``with app.run():`` is open
        self.included: list[App] = []  # app.include(other)

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
        include_source: bool | None = None,
        serialized: bool = False,
        nonpreemptible: bool = False,
        restrict_modal_access: bool = False,
        name: str | None = None,
        slurm: dict[str, Any] | None = None,
        secrets: Sequence[Secret] | None = None,
        volumes: Mapping[str | PurePosixPath, Volume] | None = None,
        env: Mapping[str, str | None] | None = None,
        **modal_only: Any,
    ) -> Any:
        """Decorator: run this function on an autoscaled pool of workers.

        Use it bare (``@app.function``) or with Modal's settings: ``max_containers``,
        ``min_containers``, ``buffer_containers``, ``scaledown_window`` (seconds, default 60),
        ``retries`` (an int or ``nbscale.Retries``), ``timeout`` (seconds per attempt,
        default 300), the resources ``cpu``, ``memory`` (MiB) and ``gpu`` (``"any"``,
        ``"A100"``, ``"H100:2"`` or a list of fallbacks), and the ``image`` Docker workers
        run in (an ``nbscale.Image``; default: the app's, else ``Image.from_kernel`` with
        what the function uses). Resources and image apply to Docker workers; resources and
        ``slurm`` (a dict of ``partition``, ``account``, ``qos``, ``time``, ``sbatch_args``,
        ``drain_seconds``, over the control plane's ``slurm_*`` settings) to Slurm workers.
        ``secrets`` (``nbscale.Secret``) and ``env`` (a dict) set variables in the workers'
        environment when they start; ``volumes`` (``{path: nbscale.Volume}``) mounts named
        volumes in them; both add to the app's.

        ``serialized=True`` sends the function by value, as nbscale does for functions of
        notebooks, scripts and (``include_source``) your own modules; ``nonpreemptible``
        and ``restrict_modal_access`` are accepted (nothing preempts your workers, and they
        are never clients)."""
        check_keywords(modal_only, "@app.function")
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
            "volumes": self._volumes(volumes, "@app.function"),
        }
        all_secrets = self._secrets(secrets, env, "@app.function")
        check_image(image)
        for flag, value in (
            ("serialized", serialized),
            ("nonpreemptible", nonpreemptible),
            ("restrict_modal_access", restrict_modal_access),
        ):
            if not isinstance(value, bool):
                raise InvalidError(f"{flag} must be True or False, got {value!r}")
        by_value = serialized or (
            self.include_source if include_source is None else bool(include_source)
        )

        def wrap(raw: Callable[..., Any]) -> Function:
            if isinstance(raw, Function):
                raise InvalidError(f"{raw.name} is already an nbscale Function")
            if isinstance(raw, LocalEntrypoint):
                raise InvalidError(f"{raw.name} is a local entrypoint: it runs here")
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
            if by_value:
                send_source(raw)
            fn = Function(raw, fn_name, options, image or self.image, self, all_secrets)
            self.registered_functions[fn_name] = fn
            return fn

        return wrap(_fn) if _fn is not None else wrap

    def _secrets(
        self, secrets: object, env: Mapping[str, str | None] | None, where: str
    ) -> tuple[Secret, ...]:
        """The app's secrets, then the function's, then its ``env`` (the later win)."""
        extra = (Secret.from_dict(env),) if env else ()
        return (*self.secrets, *check_secrets(secrets, where), *extra)

    def _volumes(self, volumes: object, where: str) -> dict[str, Volume]:
        """The app's volumes with the function's (the function's at a path the app has)."""
        check_volumes(volumes, where)
        return {**self.volumes, **{str(path): v for path, v in (volumes or {}).items()}}  # type: ignore[attr-defined]

    def local_entrypoint(
        self, _fn: Callable[..., Any] | None = None, *, name: str | None = None
    ) -> Any:
        """Decorator: the function ``nbscale run FILE.py`` runs here, in its own process,
        with its parameters parsed from the command line (``--name value``). Calling it
        runs it too, so ``python FILE.py`` works with ``if __name__ == "__main__": main()``.
        """

        def wrap(raw: Callable[..., Any]) -> LocalEntrypoint:
            if isinstance(raw, (Function, LocalEntrypoint)) or not callable(raw):
                raise InvalidError(f"@app.local_entrypoint needs a plain function, got {raw!r}")
            entry_name = name or getattr(raw, "__qualname__", None) or repr(raw)
            entrypoint = LocalEntrypoint(raw, self, entry_name)
            self.registered_entrypoints[entry_name] = entrypoint
            return entrypoint

        return wrap(_fn) if _fn is not None else wrap

    def run(
        self,
        *,
        detach: bool = False,
        client: Any = None,
        interactive: bool = False,
        environment_name: str | None = None,
        name: str | None = None,
    ) -> AppRun:
        """``with app.run():``: a span that owns what the app's functions start in it.
        Leaving it stops their pools (their calls are cancelled, their workers stop),
        unless ``detach=True``: then the calls they spawned keep running on the Jupyter
        server's control plane after this process ends (a detached run needs it), and
        their ids are printed. ``async with app.run():`` works too."""
        if client is not None:
            raise not_supported("app.run(client=...)", "a process has one connection")
        if interactive:
            raise not_supported("app.run(interactive=True)", "workers have no terminal")
        if environment_name is not None:
            raise not_supported("app.run(environment_name=...)", "it has no environments")
        if not isinstance(detach, bool):
            raise InvalidError(f"detach must be True or False, got {detach!r}")
        return AppRun(self, detach)

    def include(self, other_app: App, /, inherit_tags: bool = True) -> App:
        """Modal's ``app.include(other_app)``: the other app's functions are this app's too
        (``nbscale run`` finds them, ``with app.run():`` scopes them), for an app split
        across files. Returns this app."""
        if not isinstance(other_app, App):
            raise InvalidError(f"app.include takes an nbscale.App, got {other_app!r}")
        if self in other_app.with_included():
            raise InvalidError(f"{other_app!r} includes {self!r} already")
        self.registered_functions.update(other_app.registered_functions)
        self.included.append(other_app)
        if inherit_tags:
            self.tags = {**other_app.tags, **self.tags}
        return self

    def with_included(self) -> list[App]:
        """This app and those it includes, theirs too."""
        found = [self]
        for app in found:
            found += [other for other in app.included if other not in found]
        return found

    @classmethod
    def lookup(cls, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: ``App.lookup`` (an app for Modal's Sandboxes) raises
        ``InvalidError``; deployed functions are found with ``Function.from_name``."""
        raise not_supported(
            "modal.App.lookup",
            "it makes an app for Sandboxes, which nbscale does not run; deployed functions and "
            "classes are found with Function.from_name and Cls.from_name",
        )

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
        include_source: bool | None = None,
        secrets: Sequence[Secret] | None = None,
        volumes: Mapping[str | PurePosixPath, Volume] | None = None,
        env: Mapping[str, str | None] | None = None,
        **modal_only: Any,
    ) -> Any:
        """Decorator: serve this class on autoscaled pools, one per set of its
        ``nbscale.parameter()`` values. Each worker builds one instance and runs its
        ``@nbscale.enter()`` methods before its first input (within ``startup_timeout``
        seconds, default ``timeout``), its ``@nbscale.method()`` methods on inputs, and its
        ``@nbscale.exit()`` methods when it stops. The settings are ``@app.function``'s."""
        check_keywords(modal_only, "@app.cls")
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
            "volumes": self._volumes(volumes, "@app.cls"),
        }
        all_secrets = self._secrets(secrets, env, "@app.cls")
        check_image(image)

        by_value = self.include_source if include_source is None else bool(include_source)

        def wrap(user_cls: type) -> Cls:
            made = make_cls(user_cls, settings, image or self.image, startup_timeout, all_secrets)
            if by_value:
                send_source(user_cls)
            self.registered_classes[made.name] = made
            return made

        return wrap(_cls) if _cls is not None else wrap

    @aio_method
    async def deploy(
        self, *, name: str | None = None, environment_name: str | None = None, tag: str = ""
    ) -> App:
        """Register this app's functions and classes with the Jupyter server's control
        plane, under the app's name (or ``name``), replacing an earlier deployment: any
        kernel or script then calls them with ``Function.from_name(app, function)`` or
        ``Cls.from_name(app, class)``. Refused without a Jupyter server: nothing deployed
        would outlive this process."""
        from ._deploy import deploy

        if name is not None:
            self.name = name
        self.deployed = await deploy(self)
        return self


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

"""``@app.cls``: a class whose instance lives on each worker of its pool, as in Modal.

``@nbscale.enter()`` methods run once per container before its first input (load a model
there), ``@nbscale.exit()`` ones when it stops (scaled down, stopped, SIGTERM), and each
``@nbscale.method()`` is called like a function: ``Model(size="large").predict.remote(x)``,
``.map``, ``.spawn``, ``.remote_gen``, each with its ``.aio`` twin. ``nbscale.parameter()``
declares typed constructor parameters; each set of values gets a pool of its own. All the
methods of one parameter set share that pool: an input's arguments begin with the method's
name, and the worker's ``ClassService`` (``nbscale_runtime/service.py``) dispatches it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from nbscale_runtime.batching import ATTRIBUTE as BATCHED
from nbscale_runtime.service import ClassService, Parameter, run_alone
from nbscale_server.options import FunctionOptions

from ._function import Function
from ._image import Image
from ._options import check_image, function_options
from ._pickling import pickle_function
from ._secret import Secret, secrets_setting
from .exceptions import InvalidError

_ENTER = "__nbscale_enter__"
_EXIT = "__nbscale_exit__"
_METHOD = "__nbscale_method__"
_PARAMETER_TYPES = (int, float, str, bytes, bool)
_MISSING = object()


def parameter(*, default: Any = _MISSING, init: bool = True) -> Any:
    """A constructor parameter of an ``@app.cls`` class: ``size: str = parameter()``
    (required) or ``parameter(default="small")``. Its type is its annotation (int, float,
    str, bytes or bool); each set of values gets its own pool. ``init=False``: an internal
    attribute, not a parameter."""
    return Parameter(default, init)


def _marker(attribute: str) -> Callable[[Any], Any]:
    def mark(fn: Any) -> Any:
        if not callable(fn):
            raise TypeError(f"expected a method, got {fn!r}")
        setattr(fn, attribute, True)
        return fn

    return mark


def enter(*, snap: bool = False) -> Callable[[Any], Any]:
    """Run this method once per container, before its first input (may be async); it counts
    against the class's ``startup_timeout``. ``snap`` is accepted for Modal's programs and
    ignored (there are no memory snapshots here)."""
    return _marker(_ENTER)


def exit() -> Callable[[Any], Any]:
    """Run this method when the container stops: scaled down, its pool stopped, or SIGTERM
    (within the ``stop_grace`` setting's seconds)."""
    return _marker(_EXIT)


def method(*, is_generator: bool | None = None) -> Callable[[Any], Any]:
    """Make this method callable remotely: ``Model().predict.remote(x)``, ``.map``, ..."""
    return _marker(_METHOD)


def _members(cls: type, attribute: str) -> list[str]:
    return [
        name
        for name, value in inspect.getmembers(cls, callable)
        if getattr(value, attribute, False)
    ]


class Cls:
    """A class declared with ``@app.cls(...)``; call it with its parameters to get an
    object whose methods run remotely."""

    deployed_app = ""  # the deployed app it was looked up in (from_name): its pools are its

    @classmethod
    def from_name(
        cls, app_name: str, name: str, *, environment_name: str | None = None, client: Any = None
    ) -> Cls:
        """The class ``name`` of the deployed app ``app_name``: ``Model(p=1).method.remote()``
        runs on the deployed app's pools. ``NotFoundError`` when it is not deployed."""
        from ._deploy import cls_from_name

        return cls_from_name(app_name, name)

    def __init__(
        self,
        user_cls: type,
        options: FunctionOptions,
        image: Image | None,
        startup_timeout: float | None,
        secrets: tuple[Secret, ...] = (),
    ) -> None:
        self.user_cls = user_cls
        self.name = user_cls.__qualname__
        self.options = options
        self.image = image
        self.secrets = secrets
        self.startup_timeout = startup_timeout or options.timeout
        self.parameters = _parameters(user_cls)
        self.methods = _members(user_cls, _METHOD) + [
            n for n in _members(user_cls, BATCHED) if n not in _members(user_cls, _METHOD)
        ]
        if not self.methods:
            raise InvalidError(
                f"{self.name} has no method to call remotely: mark them with @nbscale.method()"
            )
        self.batched = {
            n: tuple(getattr(getattr(user_cls, n), BATCHED))
            for n in self.methods
            if getattr(getattr(user_cls, n), BATCHED, None)
        }
        init = vars(user_cls).get("__init__", object.__init__)
        if init is not object.__init__ and len(inspect.signature(init).parameters) > 1:
            raise InvalidError(
                f"{self.name} has an __init__ with arguments: declare its parameters with "
                "nbscale.parameter() and load what it needs in an @nbscale.enter() method"
            )
        self._objects: dict[tuple[tuple[str, Any], ...], Obj] = {}

    def __repr__(self) -> str:
        return f"<nbscale.Cls {self.name}>"

    def __call__(self, **params: Any) -> Obj:
        values = self._check(params)
        key = tuple(sorted(values.items()))
        obj = self._objects.get(key)
        if obj is None:
            obj = self._objects[key] = Obj(self, values)
        return obj

    def with_options(self, **settings: Any) -> Cls:
        """A variant of this class with other settings, and pools of its own."""
        image = check_image(settings.pop("image", self.image))
        startup_timeout = settings.pop("startup_timeout", self.startup_timeout)
        secrets = secrets_setting(settings, self.secrets, f"{self.name}.with_options")
        options = function_options(None, settings, self.options, variant=True)
        return Cls(self.user_cls, _async(options, self.user_cls), image, startup_timeout, secrets)

    def _check(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - set(self.parameters)
        if unknown:
            known = ", ".join(self.parameters) or "none"
            raise InvalidError(
                f"{self.name} has no parameter {', '.join(sorted(unknown))} (its parameters: "
                f"{known})"
            )
        values = {}
        for name, (kind, default) in self.parameters.items():
            value = params.get(name, default)
            if value is _MISSING:
                raise InvalidError(f"{self.name} needs its parameter {name!r}")
            if type(value) is not kind and not (kind is float and type(value) is int):
                raise InvalidError(
                    f"{self.name}: parameter {name!r} must be a {kind.__name__}, got {value!r}"
                )
            values[name] = value
        return values


class Obj:
    """An instance of an ``@app.cls`` class for one set of parameters: its methods are
    functions that run on that parameter set's pool."""

    def __init__(self, cls: Cls, params: dict[str, Any]) -> None:
        self._cls = cls
        self._params = params
        args = ", ".join(f"{k}={v!r}" for k, v in params.items())
        self.label = f"{cls.name}({args})" if params else cls.name
        self._methods: dict[str, Method] = {}
        self._pickled: tuple[bytes, str] | None = None
        self._local: ClassService | None = None

    def __repr__(self) -> str:
        return f"<nbscale.Obj {self.label}>"

    def __getattr__(self, name: str) -> Method:
        cls = self.__dict__.get("_cls")
        if cls is None or name not in cls.methods:
            raise AttributeError(
                f"{self.__dict__.get('label', 'object')} has no remote method {name!r}"
            )
        method = self._methods.get(name)
        if method is None:
            method = self._methods[name] = Method(self, name)
        return method

    def service(self) -> ClassService:
        cls = self._cls
        return ClassService(
            cls.user_cls,
            dict(self._params),
            _members(cls.user_cls, _ENTER),
            _members(cls.user_cls, _EXIT),
            dict(cls.batched),  # type: ignore[arg-type]
            cls.startup_timeout,
        )

    def pickled(self) -> tuple[bytes, str]:
        """The service's pickle and id: the same for every method, hence one pool."""
        if self._pickled is None:
            self._pickled = pickle_function(self.service())
        return self._pickled

    def local_instance(self) -> Any:
        """An instance in this process, its ``@enter`` run once (for ``.local``)."""
        if self._local is None:
            service = self.service()
            service.start(run_alone)
            self._local = service
        return self._local.instance

    def update_autoscaler(self, **settings: Any) -> dict[str, Any]:
        """Change this parameter set's pool's autoscaler settings now."""
        return getattr(self, self._cls.methods[0]).update_autoscaler(**settings)  # type: ignore[no-any-return]


class Method(Function):
    """A remote method of an ``Obj``: a ``Function`` whose pool is its object's."""

    def __init__(self, obj: Obj, name: str) -> None:
        cls = obj._cls
        raw = getattr(cls.user_cls, name)
        super().__init__(raw, f"{cls.name}.{name}", cls.options, cls.image, None, cls.secrets)
        self.pool_label = obj.label
        self.deployed_app = cls.deployed_app
        self._prefix = (name,)
        self._obj = obj
        self._method = name

    def __repr__(self) -> str:
        return f"<nbscale.Method {self._obj.label}.{self._method}>"

    def _pickle(self) -> tuple[bytes, str]:
        return self._obj.pickled()

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the method in this process, on an instance whose ``@enter`` ran here."""
        result = getattr(self._obj.local_instance(), self._method)(*args, **kwargs)
        return run_alone(result) if inspect.iscoroutine(result) else result

    def with_options(self, **settings: Any) -> Function:
        raise InvalidError(
            f"{self.name}: set options on the class: {self._obj._cls.name}.with_options(...)"
        )


def _parameters(cls: type) -> dict[str, tuple[type, Any]]:
    """The class's ``nbscale.parameter()`` attributes: name -> (type, default)."""
    found: dict[str, tuple[type, Any]] = {}
    for klass in reversed(cls.__mro__):
        hints = getattr(klass, "__annotations__", {})
        for name, value in vars(klass).items():
            if not isinstance(value, Parameter) or not value.init:
                continue
            kind = hints.get(name)
            if isinstance(kind, str):  # from __future__ import annotations
                kind = {t.__name__: t for t in _PARAMETER_TYPES}.get(kind, kind)
            if kind not in _PARAMETER_TYPES:
                raise InvalidError(
                    f"{cls.__qualname__}.{name}: a parameter is annotated int, float, str, "
                    f"bytes or bool, got {kind!r}"
                )
            found[name] = (kind, value.default)  # type: ignore[assignment]
    return found


def _async(options: FunctionOptions, user_cls: type) -> FunctionOptions:
    """Workers run inputs on an asyncio loop when every remote method is async; a class
    with ``@exit`` hooks gets ``exit_grace`` to run them when its workers stop."""
    methods = [getattr(user_cls, n) for n in _members(user_cls, _METHOD)]
    is_async = bool(methods) and all(inspect.iscoroutinefunction(m) for m in methods)
    has_exit = bool(_members(user_cls, _EXIT))
    return dataclasses.replace(options, is_async=is_async, has_exit=has_exit)


def make_cls(
    user_cls: type,
    settings: dict[str, Any],
    image: Image | None,
    startup_timeout: float | None,
    secrets: tuple[Secret, ...] = (),
) -> Cls:
    """What ``@app.cls(...)`` makes of ``user_cls``."""
    if not inspect.isclass(user_cls):
        raise TypeError(f"@app.cls needs a class, got {user_cls!r}")
    concurrency = getattr(user_cls, "__nbscale_concurrent__", {})
    batched = [
        tuple(getattr(m, BATCHED))
        for _, m in inspect.getmembers(user_cls, callable)
        if getattr(m, BATCHED, None)
    ]
    if batched and concurrency:
        raise InvalidError(f"{user_cls.__qualname__}: @batched and @concurrent do not combine")
    extra = {"max_inputs": max(size for size, _ in batched)} if batched else {}
    generators = [
        name
        for name, m in inspect.getmembers(user_cls, callable)
        if getattr(m, _METHOD, False)
        and (inspect.isgeneratorfunction(m) or inspect.isasyncgenfunction(m))
    ]
    retries = settings.get("retries")
    if generators and retries:
        raise InvalidError(
            f"{user_cls.__qualname__}.{generators[0]} is a generator: a class with generator "
            "methods cannot be retried (the values they yielded already reached the caller)"
        )
    options = function_options(None, {**settings, **concurrency, **extra})
    if startup_timeout is not None and (
        not isinstance(startup_timeout, int | float) or startup_timeout <= 0
    ):
        raise InvalidError(
            f"startup_timeout must be a number of seconds > 0, got {startup_timeout!r}"
        )
    return Cls(user_cls, _async(options, user_cls), image, startup_timeout, secrets)

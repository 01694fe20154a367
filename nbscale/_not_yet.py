"""Modal's names for what nbscale does not have *yet*: shared ``Dict`` and ``Queue``,
``Secret`` and ``Volume`` (all to be hosted by the control plane's store), deployed apps
(``Function.from_name``, ``Cls.from_name``, ``app.deploy()``), classes (``@app.cls`` with
``@modal.enter`` and ``@modal.method``), generators, batching and a worker's context
(``current_input_id``). Each raises ``InvalidError`` naming the feature, so
that a ported program stops at the line that uses it, rather than with an
``AttributeError``. They are replaced one by one as the features arrive.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ._unsupported import Unsupported, not_supported, refuser, refusing_classmethod

_STORE = "not yet: the control plane's store that will hold it is to come"
_DEPLOY = "not yet: deployed apps are to come; until then import the function's module and call it"
_CLASSES = (
    "not yet: classes (@app.cls, with @modal.enter and @modal.method) are to come; until "
    "then load what a worker needs once in a module-level cache of an @app.function"
)


class Dict(Unsupported):
    """Not supported by nbscale yet: a dict shared by the kernel and its workers."""

    feature, why = "modal.Dict", f"{_STORE}; until then pass data as arguments and results"
    from_name = ephemeral = refusing_classmethod()


class Queue(Unsupported):
    """Not supported by nbscale yet: a queue shared by the kernel and its workers."""

    feature, why = "modal.Queue", f"{_STORE}; until then use .map or .spawn_map"
    from_name = ephemeral = refusing_classmethod()


class Secret(Unsupported):
    """Not supported by nbscale yet: environment variables given to workers at start."""

    feature = "modal.Secret"
    why = (
        f"{_STORE}; until then workers inherit the environment of the process that starts "
        "them, and Docker workers take Image.env({...})"
    )
    from_name = from_dict = from_dotenv = from_local_environ = refusing_classmethod()


class Volume(Unsupported):
    """Not supported by nbscale yet: a named directory every worker mounts."""

    feature = "modal.Volume"
    why = f"{_STORE}; until then give workers a directory they all see"
    from_name = ephemeral = refusing_classmethod()


class Cls(Unsupported):
    """Not supported by nbscale yet: classes whose methods run on workers."""

    feature, why = "modal.Cls", _CLASSES
    from_name = refusing_classmethod()


def refuse_from_name(cls: Any, *args: Any, **kwargs: Any) -> NoReturn:
    """``Function.from_name``: looking up a deployed function."""
    raise not_supported("modal.Function.from_name", _DEPLOY)


def refuse_class(*args: Any, **kwargs: Any) -> NoReturn:
    """``@app.cls``."""
    raise not_supported("@app.cls", _CLASSES)


def refuse_deploy(feature: str) -> NoReturn:
    """``app.deploy()``, ``App.lookup``."""
    raise not_supported(feature, _DEPLOY)


enter = refuser("@modal.enter", _CLASSES)
exit = refuser("@modal.exit", _CLASSES)  # Modal's name, shadowing the builtin here only
method = refuser("@modal.method", _CLASSES)
parameter = refuser("modal.parameter", _CLASSES)
batched = refuser("@modal.batched", "not yet: batched inputs are to come")
current_input_id = refuser("modal.current_input_id", "not yet: a worker's context is to come")
current_function_call_id = refuser(
    "modal.current_function_call_id", "not yet: a worker's context is to come"
)


def refuse_remote_gen(*args: Any, **kwargs: Any) -> NoReturn:
    """``f.remote_gen(...)``."""
    raise not_supported("Function.remote_gen", "not yet: generator functions are to come")

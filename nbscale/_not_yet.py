"""Modal's names for what nbscale does not have *yet*: shared ``Dict`` and ``Queue`` (to be
hosted by the control plane's store) and deployed apps
(``Function.from_name``, ``Cls.from_name``, ``app.deploy()``). Each raises
``InvalidError`` naming the feature, so that a ported program stops at the line that uses
it, rather than with an ``AttributeError``. They are replaced one by one as the features arrive.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ._unsupported import Unsupported, not_supported, refusing_classmethod

_STORE = "not yet: the control plane's store that will hold it is to come"
_DEPLOY = "not yet: deployed apps are to come; until then import the function's module and call it"


class Dict(Unsupported):
    """Not supported by nbscale yet: a dict shared by the kernel and its workers."""

    feature, why = "modal.Dict", f"{_STORE}; until then pass data as arguments and results"
    from_name = ephemeral = refusing_classmethod()


class Queue(Unsupported):
    """Not supported by nbscale yet: a queue shared by the kernel and its workers."""

    feature, why = "modal.Queue", f"{_STORE}; until then use .map or .spawn_map"
    from_name = ephemeral = refusing_classmethod()


def refuse_from_name(cls: Any, *args: Any, **kwargs: Any) -> NoReturn:
    """``Function.from_name``, ``Cls.from_name``: looking up a deployed function."""
    raise not_supported(f"modal.{cls.__name__}.from_name", _DEPLOY)


def refuse_deploy(feature: str) -> NoReturn:
    """``app.deploy()``, ``App.lookup``."""
    raise not_supported(feature, _DEPLOY)

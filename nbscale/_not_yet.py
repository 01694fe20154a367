"""Modal's names for what nbscale does not have *yet*: ``Secret`` and ``Volume`` (to be
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


def refuse_from_name(cls: Any, *args: Any, **kwargs: Any) -> NoReturn:
    """``Function.from_name``, ``Cls.from_name``: looking up a deployed function."""
    raise not_supported(f"modal.{cls.__name__}.from_name", _DEPLOY)


def refuse_deploy(feature: str) -> NoReturn:
    """``app.deploy()``, ``App.lookup``."""
    raise not_supported(feature, _DEPLOY)

"""Modal's names for what nbscale does not have *yet*: ``Secret`` and ``Volume`` (to be
hosted by the control plane's store), and ``App.lookup``. Each raises
``InvalidError`` naming the feature, so that a ported program stops at the line that uses
it, rather than with an ``AttributeError``. They are replaced one by one as the features arrive.
"""

from __future__ import annotations

from typing import NoReturn

from ._unsupported import Unsupported, not_supported, refusing_classmethod

_STORE = "not yet: the control plane's store that will hold it is to come"


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


def refuse_lookup() -> NoReturn:
    """``App.lookup``: Modal's apps for Sandboxes, which nbscale does not run."""
    raise not_supported(
        "modal.App.lookup",
        "it makes an app for Sandboxes, which nbscale does not run; deployed functions and "
        "classes are found with Function.from_name and Cls.from_name",
    )

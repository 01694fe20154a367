"""One setting: its names on each side (the client's key and variable, the server's trait),
its default, and how a value given as text, JSON or Python parses. The table of every
setting is ``settings.py``'s."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Scope = Literal["client", "control plane", "server"]

SAME: Any = object()  # a server default that is the client's
_NONE_WORDS = ("", "none", "null")  # how a file or a variable says "no value" (a None default)
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # the server's trait, ControlPlaneConfig's field, and the client's key
    kind: type[bool] | type[int] | type[float] | type[str]  # what a value parses to
    default: Any
    scope: Scope
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    default_text: str | None = None  # what a None default means ("this interpreter")
    client_name: str | None = None  # the client's key, where it differs (max_workers)
    server_default: Any = SAME  # the server's default, where it differs

    @property
    def key(self) -> str | None:
        """The client's name: ``nbscale.config(key=...)``; None for a server-only setting."""
        return None if self.scope == "server" else (self.client_name or self.name)

    @property
    def env(self) -> str | None:
        return None if self.key is None else f"NBSCALE_{self.key.upper()}"

    @property
    def trait(self) -> str | None:
        """The server's name: ``c.NbScale.<trait>``; None for a client-only setting."""
        return None if self.scope == "client" else self.name

    @property
    def trait_default(self) -> Any:
        return self.default if self.server_default is SAME else self.server_default

    @property
    def full_help(self) -> str:
        """The help, and what an unset (None) default means."""
        if self.default_text is None:
            return self.help
        return f"{self.help} None (the default): {self.default_text}."

    def parse(self, raw: Any) -> Any:
        """A value from a variable (text), a JSON file or Python; ValueError says why not."""
        if self.default is None and (raw is None or str(raw).strip().lower() in _NONE_WORDS):
            return None
        if self.choices:
            if str(raw) not in self.choices:
                raise ValueError(f"expected one of {', '.join(self.choices)}")
            return str(raw)
        if self.kind is bool:
            word = str(raw).strip().lower()
            if word not in _TRUE_WORDS + _FALSE_WORDS:
                raise ValueError("expected true or false (1/0, yes/no, on/off)")
            return word in _TRUE_WORDS
        if self.kind is str:
            if raw is None or isinstance(raw, bool | int | float):
                raise ValueError("expected a string")
            return str(raw)
        expected = "an integer" if self.kind is int else "a number"
        if raw is None or isinstance(raw, bool) or (self.kind is int and _fractional(raw)):
            raise ValueError(f"expected {expected}")
        value: float = int(raw) if self.kind is int else float(raw)
        if not math.isfinite(value):
            raise ValueError(f"expected {expected}, got {raw!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}")
        return value


def _fractional(raw: Any) -> bool:
    return isinstance(raw, float) and not raw.is_integer()

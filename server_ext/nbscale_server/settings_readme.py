"""The README's settings table, rendered from the one table of settings (``settings.py``):
one row per setting, with the client's and the server's names, its default and meaning."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .settings import SETTINGS, Setting


def _shown(setting: Setting, value: Any) -> str:
    if value is None:
        return setting.default_text or "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default_cell(setting: Setting) -> str:
    shown = _shown(setting, setting.default)
    if setting.scope != "client" and setting.trait_default != setting.default:
        shown += f" (server: {_shown(setting, setting.trait_default)})"
    return shown


def markdown(settings: Iterable[Setting] = SETTINGS.values()) -> str:
    """The README's settings table: one row per setting, with both sides' names."""
    lines = [
        "| client: `NBSCALE_<KEY>` | server: `c.NbScale.<name>` | default | meaning |",
        "|---|---|---|---|",
    ]
    for s in settings:
        env = f"`{s.env}`" if s.env else "—"
        trait = f"`{s.trait}`" if s.trait else "—"
        meaning = s.help.replace("|", "\\|")
        lines.append(f"| {env} | {trait} | {_default_cell(s)} | {meaning} |")
    return "\n".join(lines) + "\n"

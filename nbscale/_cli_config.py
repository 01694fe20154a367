"""``nbscale config``: every client setting, its value now and where that value comes from."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import _config
from .exceptions import InvalidError


def add_parser(sub: Any) -> None:
    p_config = sub.add_parser(
        "config",
        help="show every setting, its value now and where it comes from "
        "(NBSCALE_<KEY>, the config file, or the default)",
    )
    p_config.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_config.set_defaults(run=run)


def _rows() -> list[dict[str, Any]]:
    rows = []
    for key, setting in _config.SETTINGS.items():
        row: dict[str, Any] = {"setting": key, "env": setting.env, "help": setting.full_help}
        try:
            row["value"], row["source"] = _config.resolve(key)
        except InvalidError as exc:
            row["value"], row["source"], row["error"] = None, "invalid", str(exc)
        rows.append(row)
    return rows


def _shown(row: dict[str, Any]) -> str:
    if "error" in row:
        return "(invalid)"
    setting = _config.SETTINGS[row["setting"]]
    if row["value"] is None and setting.default_text:
        return f"({setting.default_text})"
    return str(row["value"])


def run(args: argparse.Namespace) -> int:
    rows = _rows()
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        width = max(len(row["setting"]) for row in rows) + 2
        value_width = max(len(_shown(row)) for row in rows) + 2
        print(f"{'SETTING':<{width}}{'VALUE':<{value_width}}FROM")
        for row in rows:
            print(f"{row['setting']:<{width}}{_shown(row):<{value_width}}{row['source']}")
        path = _config.config_file()
        print(f"\nconfig file: {path}{'' if os.path.exists(path) else ' (none there)'}")
    errors = [row["error"] for row in rows if "error" in row]
    for error in errors:
        print(f"nbscale config: {error}", file=sys.stderr)
    return 1 if errors else 0

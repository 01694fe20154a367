"""``nbscale images build`` and ``nbscale images list``: worker images on this Docker host."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ._image import Image
from ._image_build import build, list_images
from .exceptions import NbscaleError


def add_parser(sub: Any) -> None:
    p_images = sub.add_parser("images", help="build or list Docker worker images")
    images = p_images.add_subparsers(dest="images_command", required=True)
    p_build = images.add_parser(
        "build",
        help="build the default worker image (Image.from_kernel) unless it is up to date",
    )
    p_build.add_argument(
        "packages",
        nargs="*",
        help="also mirror these installed distributions at this environment's versions",
    )
    images.add_parser("list", help="list the worker images nbscale built")


def run(args: argparse.Namespace) -> int:
    try:
        if args.images_command == "build":
            started = time.monotonic()
            tag = build(Image.from_kernel(*args.packages))
            print(f"{tag} ready ({time.monotonic() - started:.2f} s)")
            return 0
        rows = list_images()
    except NbscaleError as exc:  # no engine, no base image, a failed step: say it plainly
        print(f"nbscale images: {exc}", file=sys.stderr)
        return 1
    print(f"{'TAG':<32} {'PYTHON':<7} {'SIZE':>8}  {'CREATED':<17} DESCRIPTION")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created"]))
        print(
            f"{row['tag']:<32} {row['python']:<7} {row['size_mb']:>5} MB  {created:<17} "
            f"{row['description']}"
        )
    return 0

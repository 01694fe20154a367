"""``nbscale images base|build|list|prune``: the worker images on this Docker host."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from . import _config, _kernel_env
from ._views.text import StatusLine


def add_parser(sub: Any) -> None:
    p_images = sub.add_parser("images", help="make, build or list Docker worker images")
    images = p_images.add_subparsers(dest="images_command", required=True, metavar="COMMAND")
    p_base = images.add_parser(
        "base",
        help="make the worker base image (NBSCALE_BASE_IMAGE): pull python:X.Y-slim-bookworm "
        "when a registry answers, else build it offline with debootstrap (as root)",
    )
    p_base.add_argument("--force", action="store_true", help="remake it even if it is there")
    p_base.add_argument("--offline", action="store_true", help="do not try a registry")
    p_base.add_argument(
        "--mirror", help="the Debian mirror for debootstrap (default: the one apt uses)"
    )
    p_base.set_defaults(run=_base)
    p_build = images.add_parser(
        "build",
        help="build the default worker image (Image.from_kernel) unless it is up to date",
    )
    p_build.add_argument(
        "packages",
        nargs="*",
        help="also mirror these installed distributions at this environment's versions",
    )
    p_build.set_defaults(run=_build)
    images.add_parser("list", help="list the worker images nbscale built").set_defaults(run=_list)
    p_prune = images.add_parser(
        "prune",
        help="remove the worker images nbscale built that no container uses, but the newest",
    )
    p_prune.add_argument(
        "--keep", type=int, default=3, metavar="N", help="keep the N newest (default 3)"
    )
    p_prune.add_argument(
        "--description", help="only the images with this description (as `list` shows it)"
    )
    p_prune.add_argument("--dry-run", action="store_true", help="say what would go; remove none")
    p_prune.set_defaults(run=_prune)


def _base(args: argparse.Namespace) -> int:
    from ._base_image import make_base
    from ._image_build import docker_client

    tag, python = _config.get("base_image"), _kernel_env.python_minor()
    started = time.monotonic()
    line = StatusLine(sys.stdout)
    how = make_base(
        docker_client(),
        tag,
        python,
        line.update,
        force=args.force,
        offline=args.offline,
        mirror=args.mirror,
    )
    line.finish(f"{tag} ready: Python {python}, {how} ({time.monotonic() - started:.1f} s)")
    return 0


def _build(args: argparse.Namespace) -> int:
    from ._image import Image
    from ._image_build import build

    started = time.monotonic()
    line = StatusLine(sys.stdout)
    tag = build(Image.from_kernel(*args.packages), out=line.update)
    line.finish(f"{tag} ready ({time.monotonic() - started:.2f} s)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from ._image_build import list_images

    rows = list_images()
    print(f"{'TAG':<32} {'PYTHON':<7} {'SIZE':>8}  {'CREATED':<17} DESCRIPTION")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created"]))
        print(
            f"{row['tag']:<32} {row['python']:<7} {row['size_mb']:>5} MB  {created:<17} "
            f"{row['description']}"
        )
    return 0


def _prune(args: argparse.Namespace) -> int:
    from ._image_prune import prune, report

    if args.keep < 0:
        print(f"nbscale images prune: --keep must be 0 or more, not {args.keep}", file=sys.stderr)
        return 2
    result = prune(args.keep, dry_run=args.dry_run, description=args.description)
    print(report(result, args.dry_run))
    return 1 if result.refused else 0

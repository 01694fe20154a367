"""Which worker images ``nbscale images prune`` removes (the decision; the real engine's
removal is in test_docker_images.py)."""

from __future__ import annotations

import subprocess
import sys

from nbscale._image_prune import PruneResult, WorkerImage, plan_prune, report


def _image(n: int, *tags: str) -> WorkerImage:
    return WorkerImage(f"sha256:{n:064x}", created=1_000 + n, tags=tags)


def test_the_newest_stay_and_so_does_every_image_a_container_uses():
    images = [_image(n, f"nbscale/worker:{n}") for n in range(6)]
    plan = plan_prune(images, used_ids={images[0].id, images[5].id}, keep=2)
    assert plan.newest == [images[5], images[4]]
    assert plan.in_use == [images[0]]
    assert plan.remove == [images[3], images[2], images[1]]


def test_keep_zero_removes_every_unused_image():
    images = [_image(1), _image(2, "nbscale/worker:2")]
    assert plan_prune(images, used_ids=set(), keep=0).remove == [images[1], images[0]]


def test_the_report_names_each_image_and_why_one_stayed():
    pushed = _image(3, "nbscale/worker:3", "localhost:5000/nbscale/worker:3")
    dangling = _image(2)
    in_use = _image(1, "nbscale/worker:1")
    plan = plan_prune([pushed, dangling, in_use], used_ids=set(), keep=0)
    assert report(PruneResult(plan), dry_run=True).splitlines() == [
        "would remove nbscale/worker:3, localhost:5000/nbscale/worker:3",
        f"would remove {dangling.id[7:19]}",
        "would remove nbscale/worker:1",
        "would remove 3 worker images; kept the 0 newest and 0 used by a container",
    ]
    done = PruneResult(plan, removed=[pushed, dangling], freed_bytes=1_500_000_000)
    done.refused.append((in_use, "conflict: image is being used by running container 1a2b"))
    assert report(done, dry_run=False).splitlines()[2:] == [
        "kept nbscale/worker:1: conflict: image is being used by running container 1a2b",
        "removed 2 worker images (1,500 MB freed); kept the 0 newest and 0 used by a container",
    ]


def test_a_negative_keep_is_refused_before_docker_is_asked():
    command = [sys.executable, "-m", "nbscale", "images", "prune", "--keep", "-1"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--keep must be 0 or more, not -1" in out.stderr

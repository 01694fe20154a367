"""Fixtures for the Slurm suites (``-m slurm``), against the real single-node cluster that
``scripts/slurm-setup`` starts (``scripts/test`` does). They fail, never skip, when no
cluster answers, and fail when a job of nbscale is left in the queue afterwards."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

import nbscale
from nbscale_server.launchers.slurm_job import JobComment
from nbscale_server.launchers.slurm_queue import SQUEUE_FORMAT, QueueEntry, parse_squeue

SETUP_CONF = os.path.join(
    os.environ.get("NBSCALE_SLURM_DIR", "/var/lib/nbscale-slurm"), "slurm.conf"
)


def nbscale_jobs() -> list[QueueEntry]:
    """nbscale's jobs in the queue (pending, running or completing), by any control plane."""
    out = subprocess.run(
        ["squeue", "-h", "-o", SQUEUE_FORMAT], capture_output=True, text=True, check=True
    ).stdout
    return [e for e in parse_squeue(out).values() if JobComment.parse(e.comment)]


def job_fields(job_id: str) -> dict[str, str]:
    """Every ``Key=Value`` of ``scontrol show job -o``."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(part.partition("=")[::2] for part in out.split() if "=" in part)


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The cluster's SLURM_CONF, once ``sinfo`` answers through it."""
    if "SLURM_CONF" not in os.environ and os.path.exists(SETUP_CONF):
        os.environ["SLURM_CONF"] = SETUP_CONF
    try:
        subprocess.run(["sinfo", "-h"], capture_output=True, check=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"no Slurm cluster answers ({exc}); run scripts/slurm-setup as root")
    return os.environ.get("SLURM_CONF", "")


@pytest.fixture(scope="module")
def slurm_plane(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """For a module of Slurm tests: a fresh embedded control plane whose workers are Slurm
    jobs (NBSCALE_LAUNCHER=slurm), their files in a directory of their own. Fails when a job
    of nbscale is left in the queue afterwards."""
    nbscale.shutdown()
    shared = tmp_path_factory.mktemp("slurm-shared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBSCALE_LAUNCHER", "slurm")
        mp.setenv("NBSCALE_SHARED_DIR", str(shared))
        yield shared
        nbscale.shutdown()
    left = [(e.job_id, e.state, e.comment) for e in nbscale_jobs()]
    assert not left, f"left in Slurm's queue: {left}"
    assert not any(shared.iterdir()), f"left in the shared directory: {list(shared.iterdir())}"

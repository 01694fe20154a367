"""Secrets and volumes on Slurm workers: a secret's variables in the job's worker, carried by
the worker's 0600 config file in the shared directory (as its keys are), never in the job's
script, command line, comment or environment as Slurm records them; a volume refused with
the reason (the nodes do not see this machine's disk)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from slurm_cluster import job_fields

import nbscale

pytestmark = pytest.mark.slurm

VALUE = "slurm-s3cret-not-in-the-job"


@pytest.fixture(scope="module", autouse=True)
def _slurm(slurm_plane: Path) -> Path:
    return slurm_plane


def test_a_secret_reaches_the_job_through_its_config_file_only(slurm_plane: Path):
    app = nbscale.App("slurm-secrets")

    @app.function(secrets=[nbscale.Secret.from_dict({"TOKEN": VALUE})], scaledown_window=30)
    def token() -> tuple[str, str]:
        return os.environ["TOKEN"], os.environ["SLURM_JOB_ID"]

    got, job_id = token.remote()
    assert got == VALUE
    configs = list(slurm_plane.rglob("wk-*.json"))
    assert configs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in configs)
    assert VALUE in "".join(p.read_text() for p in configs)  # where it travels
    shown = " ".join(f"{k}={v}" for k, v in job_fields(job_id).items())
    script = subprocess.run(
        ["scontrol", "write", "batch_script", job_id, "-"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert script.returncode == 0, script.stderr
    assert VALUE not in shown and VALUE not in script.stdout


def test_a_volume_is_refused_on_slurm_workers_with_the_reason(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    vol = nbscale.Volume.from_name("on-slurm", create_if_missing=True)

    @nbscale.App("slurm-volume").function(volumes={"/data": vol})
    def nothing() -> None:
        return None

    with pytest.raises(nbscale.LaunchError, match="Slurm workers run on other machines"):
        nothing.remote()

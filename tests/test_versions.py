"""A worker whose environment cannot read the caller's pickles fails clearly, not weirdly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import nbscale

pytestmark = pytest.mark.slow

app = nbscale.App("test-versions")


@app.function(max_containers=1, scaledown_window=5)
def one(x):
    return x


@pytest.fixture(scope="module")
def other_cloudpickle_python(tmp_path_factory) -> str:
    """A virtual environment like this one, but with another cloudpickle minor version."""
    import cloudpickle

    other = "3.0.0" if not cloudpickle.__version__.startswith("3.0.") else "3.1.1"
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(Path(venv) / "bin" / "python")
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"cloudpickle=={other}",
        ],
        check=True,
        timeout=240,
    )
    return python


def test_cloudpickle_mismatch_is_a_version_mismatch_error(fresh_plane, other_cloudpickle_python):
    fresh_plane(NBSCALE_PYTHON=other_cloudpickle_python)
    with pytest.raises(nbscale.VersionMismatchError, match="cloudpickle 3") as info:
        one.remote(1)
    assert "same versions" in str(info.value)
    assert one.get_current_stats().num_total_runners == 0  # no worker left running

"""``nbscale demo``, the main job, run as a user would."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_maps_over_a_pool_that_grows_and_shrinks():
    proc = subprocess.run(
        [sys.executable, "-m", "nbscale", "demo", "--inputs", "40", "--scaledown-window", "1"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "launcher: process, control plane: embedded" in out
    assert "done: 40 results" in out
    sizes = [int(n) for n in re.findall(r"pool (\d+) workers", out)]
    assert max(sizes) >= 2  # it scaled up
    assert sizes[-1] == 0  # and back to zero

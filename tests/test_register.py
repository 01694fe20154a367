"""A worker's register (``nbscale_runtime.register``): what the worker writes is what the
control plane reads, and a signal the worker's own code sends itself is recorded first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from nbscale_runtime import register
from nbscale_runtime.register import RegisterWriter, RunningInput


def test_what_a_worker_starts_and_finishes_is_what_the_control_plane_reads(tmp_path):
    path = str(tmp_path / "wk.register")
    register.create(path, slots=3)
    writer = RegisterWriter(path)
    (start0, finish0), (start1, _), (start2, _) = (writer.slot(n) for n in range(3))
    start0("fc-abc", 5, 1, 100.0)
    start2("fc-def", 7, 2, 101.5)
    snapshot = register.read(path)
    assert snapshot is not None and snapshot.self_signal == 0
    assert snapshot.running == (
        RunningInput("fc-abc", 5, 1, 100.0),
        RunningInput("fc-def", 7, 2, 101.5),
    )
    finish0()
    start1("fc-abc", 6, 1, 102.0)
    assert [r.key for r in register.read(path).running] == [("fc-abc", 6), ("fc-def", 7)]
    start1("fc-a", 8, 1, 103.0)  # a shorter call id replaces a longer one whole
    assert [r.key for r in register.read(path).running] == [("fc-a", 8), ("fc-def", 7)]


def test_a_missing_or_foreign_file_reads_as_nothing(tmp_path):
    assert register.read(str(tmp_path / "none")) is None
    (tmp_path / "junk").write_bytes(b"not a register at all")
    assert register.read(str(tmp_path / "junk")) is None


def test_a_worker_killing_itself_is_recorded_before_it_dies(tmp_path):
    path = str(tmp_path / "wk.register")
    register.create(path, slots=1)
    code = textwrap.dedent(
        f"""
        import os, signal
        from nbscale_runtime.register import RegisterWriter
        writer = RegisterWriter({path!r})
        writer.watch_self_signals()
        os.kill(os.getpid(), 0)  # only a check: not recorded
        writer.slot(0)[0]("fc-x", 5, 1, 1.0)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -9
    snapshot = register.read(path)
    assert snapshot is not None
    assert snapshot.self_signal == 9 and [r.index for r in snapshot.running] == [5]

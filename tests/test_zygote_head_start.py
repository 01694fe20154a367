"""A script's first call starts the zygote ahead of its control plane (``head_start.py``):
while the control plane's modules load, where the process launcher is sure to be chosen,
and nothing of it is left when the control plane does not start.

Real processes: fresh interpreters whose first call starts a control plane, its zygote and
its worker.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from conftest import fresh_python_stdout

from nbscale_server.launchers import LaunchFailed
from nbscale_server.launchers.head_start import head_start
from nbscale_server.launchers.selection import start_launcher

# Notes, at each zygote's start, whether the control plane's modules were loaded by then;
# then makes a first call and says what its worker's parent was.
FIRST_CALL = textwrap.dedent(
    """
    import json, os, sys
    import nbscale
    from nbscale_server.launchers import zygote

    starts = []
    start = zygote.ZygoteClient.__init__
    def noted(self, *args, **kwargs):
        starts.append("nbscale_server.control_plane" in sys.modules)
        start(self, *args, **kwargs)
        starts[-1] = [starts[-1], self.proc.pid]
    zygote.ZygoteClient.__init__ = noted

    app = nbscale.App("head-start")
    ppid = app.function(max_containers=1)(os.getppid).remote()
    print(json.dumps({"starts": starts, "ppid": ppid, "status": nbscale.status()}))
    """
)


def first_call(**env: str) -> dict:
    out = fresh_python_stdout(FIRST_CALL, env={**os.environ, **env}, timeout=120)
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize(
    "env",
    [
        {"NBSCALE_LAUNCHER": "process"},
        # auto, where no Docker engine can answer: processes, for sure
        {"NBSCALE_LAUNCHER": "auto", "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    ],
    ids=["process", "auto-without-docker"],
)
def test_a_scripts_first_call_starts_the_zygote_before_the_control_plane_loads(env):
    seen = first_call(**env)
    [[loaded, zygote_pid]] = seen["starts"]  # one zygote, started ahead, and taken
    assert loaded is False
    assert seen["ppid"] == zygote_pid  # the first worker was forked by it
    assert seen["status"]["launcher"] == "process"


def test_no_zygote_is_started_ahead_where_another_launcher_may_be_chosen(tmp_path, monkeypatch):
    socket_path = tmp_path / "docker.sock"
    socket_path.touch()  # something answers there, maybe: auto may choose Docker
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    for launcher in ("auto", "docker", "slurm", "kubernetes"):
        assert head_start(launcher, sys.executable, zygote=True) is None
    assert head_start("process", sys.executable, zygote=False) is None  # process_zygote off


def test_a_zygote_started_ahead_is_ended_where_another_launcher_is_chosen(tmp_path):
    ahead = head_start("process", sys.executable, zygote=True)
    assert ahead is not None and ahead.zygote is not None
    try:
        with pytest.raises(LaunchFailed, match="registry"):  # no registry set: it cannot start
            start_launcher("kubernetes", ahead.dir, zygote=ahead.zygote)
        assert ahead.zygote.gone and ahead.zygote.proc.poll() is not None  # ended
    finally:
        ahead.discard()
    assert not os.path.exists(ahead.dir)


def test_a_control_plane_that_cannot_start_leaves_no_zygote_behind():
    script = textwrap.dedent(
        """
        import os, psutil, nbscale
        from nbscale.exceptions import LaunchError
        app = nbscale.App("head-start")
        try:
            app.function()(os.getpid).remote()
        except LaunchError as exc:
            print("LaunchError:", exc)
        left = [p.pid for p in psutil.Process().children(recursive=True)]
        print("children:", left)
        """
    )
    env = {**os.environ, "NBSCALE_LAUNCHER": "process"}
    env["NBSCALE_WORKER_ADDRESS"] = "0.0.0.0"  # refused before anything starts
    out = fresh_python_stdout(script, env=env, timeout=120)
    assert "LaunchError: worker_address '0.0.0.0' would accept workers" in out
    assert "children: []" in out  # the zygote started ahead was ended

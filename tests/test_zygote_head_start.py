"""The zygote starts ahead of its control plane (``head_start.py``): at ``import nbscale``
(``nbscale/_prestart.py``), or with ``zygote_at_import`` off while the first call's control
plane loads; only where the process launcher is sure to be chosen, and nothing of it is
left when it does not serve.

Real processes: fresh interpreters whose import starts a zygote and whose first call starts
a control plane and its worker.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import psutil
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
    env = {"NBSCALE_ZYGOTE_AT_IMPORT": "0", **env}  # the first call's own head start
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


# Says which zygote the import started (and whether the control plane's modules loaded with
# it), optionally does something before the first call, then what its worker's parent was
# and which processes are left.
AFTER_IMPORT = textwrap.dedent(
    """
    import json, os, sys, psutil
    import nbscale
    from nbscale import _prestart

    made = _prestart._pending
    zygote_pid = made.zygote.proc.pid if made is not None and made.zygote else None
    loaded = "nbscale_server.control_plane" in sys.modules
    exec(sys.argv[1])  # before the first call
    app = nbscale.App("at-import")
    ppid = app.function(max_containers=1)(os.getppid).remote()
    alive = zygote_pid is not None and psutil.pid_exists(zygote_pid)
    seen = {"zygote": zygote_pid, "loaded": loaded, "ppid": ppid, "alive": alive}
    print(json.dumps({**seen, "me": os.getpid()}))
    """
)


def after_import(before_call: str = "", **env: str) -> dict:
    env = {**os.environ, "NBSCALE_LAUNCHER": "process", **env}
    env.pop("NBSCALE_ZYGOTE_AT_IMPORT", None)
    out = fresh_python_stdout(AFTER_IMPORT, before_call, env=env, timeout=120)
    return json.loads(out.splitlines()[-1])


def test_the_import_starts_the_zygote_that_forks_the_first_calls_worker():
    seen = after_import()
    assert seen["zygote"] is not None and seen["loaded"] is True
    assert seen["ppid"] == seen["zygote"]  # the first worker was forked by it


def test_a_zygote_from_the_import_that_no_longer_fits_the_settings_is_ended():
    seen = after_import("nbscale.config(process_zygote=False)")
    assert seen["zygote"] is not None
    assert seen["ppid"] == seen["me"]  # spawned by the launcher, as process_zygote says
    assert seen["alive"] is False  # ended when the first call found it did not fit


def test_a_forked_child_leaves_its_parents_zygote_alone():
    # The child exits as a script does (atexit, finalizers): the parent's zygote serves on.
    child = (
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    assert _prestart._pending is None\n"
        "    sys.exit(0)\n"
        "assert os.waitpid(pid, 0)[1] == 0"
    )
    seen = after_import(child)
    assert seen["zygote"] is not None and seen["ppid"] == seen["zygote"]


@pytest.mark.parametrize(
    "env",
    [
        {"NBSCALE_ZYGOTE_AT_IMPORT": "0"},
        {"NBSCALE_PROCESS_ZYGOTE": "0"},
        {"NBSCALE_LAUNCHER": "docker"},
        {"NBSCALE_CONNECTION_FILE": "/nonexistent/nbscale-server.json"},  # a server's kernel
        {"NBSCALE_LAUNCHER": "no-such-launcher"},  # the first call says it is wrong
    ],
    ids=["off", "process-zygote-off", "docker", "server-kernel", "bad-setting"],
)
def test_the_import_starts_nothing_where_no_zygote_would_serve(env):
    script = textwrap.dedent(
        """
        import psutil, nbscale
        from nbscale import _prestart
        print(_prestart._pending, [p.pid for p in psutil.Process().children(recursive=True)])
        """
    )
    out = fresh_python_stdout(script, env={**os.environ, **env}, timeout=60)
    assert out.split() == ["None", "[]"]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_multiprocessing_child_that_imports_nbscale_starts_no_zygote(method):
    check = "import sys, nbscale; sys.exit(3 if nbscale._prestart._pending else 0)"
    script = textwrap.dedent(
        f"""
        import multiprocessing
        if __name__ == "__main__":
            child = multiprocessing.get_context({method!r}).Process(target=exec, args=({check!r},))
            child.start()
            child.join()
            print(child.exitcode)
        """
    )
    env = {**os.environ, "NBSCALE_LAUNCHER": "process"}
    assert fresh_python_stdout(script, env=env, timeout=60).split() == ["0"]


def test_a_bad_zygote_at_import_value_fails_the_first_call_saying_so():
    script = textwrap.dedent(
        """
        import os, nbscale
        try:
            nbscale.App("bad").function()(os.getpid).remote()
        except nbscale.InvalidError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "NBSCALE_LAUNCHER": "process", "NBSCALE_ZYGOTE_AT_IMPORT": "maybe"}
    out = fresh_python_stdout(script, env=env, timeout=60)
    assert "bad value 'maybe' for zygote_at_import (from NBSCALE_ZYGOTE_AT_IMPORT)" in out


def test_code_on_a_worker_that_imports_nbscale_starts_no_zygote():
    script = textwrap.dedent(
        """
        import nbscale

        def imports_nbscale():
            import psutil, nbscale
            from nbscale import _prestart
            return _prestart._pending, len(psutil.Process().children())

        app = nbscale.App("on-a-worker")
        print(app.function(max_containers=1)(imports_nbscale).remote())
        """
    )
    env = {**os.environ, "NBSCALE_LAUNCHER": "process"}
    out = fresh_python_stdout(script, env=env, timeout=120)
    assert out.split()[-2:] == ["(None,", "0)"]


def test_a_script_that_only_imports_leaves_no_zygote_behind():
    script = "from nbscale import _prestart; print(_prestart._pending.zygote.proc.pid)"
    env = {**os.environ, "NBSCALE_LAUNCHER": "process"}
    zygote_pid = int(fresh_python_stdout(script, env=env, timeout=60))
    assert not psutil.pid_exists(zygote_pid) or psutil.Process(zygote_pid).status() == "zombie"

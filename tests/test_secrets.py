"""Secrets and volumes without workers: the constructors of ``nbscale.Secret`` (from_dict,
from_dotenv, from_local_environ, from_name), the store that ``nbscale secret`` and
``nbscale volume`` keep (run as the real command), what an app's functions inherit, and the
control plane's side (named secrets read at registration, a keyed digest in the pool's id,
the values nowhere but the worker's config file). Worker runs are in test_secrets_workers.py
and test_docker_secrets_volumes.py."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nbscale
from nbscale_server import local_store
from nbscale_server.options import FunctionOptions

VALUE = "hunter2-not-shown"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(path))
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbscale", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )


def test_from_dict_keeps_its_values_out_of_its_repr():
    secret = nbscale.Secret.from_dict({"TOKEN": VALUE, "UNSET": None})
    assert secret.to_wire() == {"env": {"TOKEN": VALUE}}
    assert VALUE not in repr(secret) and "TOKEN" in repr(secret)
    with pytest.raises(nbscale.InvalidError, match="value of TOKEN must be a string"):
        nbscale.Secret.from_dict({"TOKEN": 3})
    with pytest.raises(nbscale.InvalidError, match="not an environment variable name"):
        nbscale.Secret.from_dict({"A=B": "x"})


def test_from_local_environ_reads_the_environment_now(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NBSCALE_TEST_TOKEN", VALUE)
    secret = nbscale.Secret.from_local_environ(["NBSCALE_TEST_TOKEN"])
    monkeypatch.setenv("NBSCALE_TEST_TOKEN", "changed later")
    assert secret.to_wire() == {"env": {"NBSCALE_TEST_TOKEN": VALUE}}
    with pytest.raises(nbscale.InvalidError, match="no local environment variable NOPE_X"):
        nbscale.Secret.from_local_environ(["NOPE_X"])


def test_from_dotenv_finds_the_file_as_python_dotenv_parses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    project = tmp_path / "project"
    (project / "src" / "deep").mkdir(parents=True)
    (project / ".env").write_text(
        f"# a comment\nexport TOKEN=\"{VALUE}\"\nURL=http://x/${{TOKEN}}\nQUOTED='a b'\nEMPTY=\n"
    )
    (project / "src" / "job.py").write_text("")
    monkeypatch.chdir(project / "src" / "deep")  # found in a parent of the working directory
    env = nbscale.Secret.from_dotenv().to_wire()["env"]
    assert env == {"TOKEN": VALUE, "URL": f"http://x/{VALUE}", "QUOTED": "a b", "EMPTY": ""}
    # a script's own: Secret.from_dotenv(__file__)
    assert nbscale.Secret.from_dotenv(project / "src" / "job.py").to_wire()["env"] == env
    (project / "prod.env").write_text("MODE=prod\n")
    assert nbscale.Secret.from_dotenv(project, filename="prod.env").to_wire() == {
        "env": {"MODE": "prod"}
    }
    monkeypatch.chdir(tmp_path)
    with pytest.raises(nbscale.NotFoundError, match=r"no \.env file in .* or its parents"):
        nbscale.Secret.from_dotenv()


def test_secret_cli_stores_0600_files_and_never_prints_values(data_dir: Path, tmp_path: Path):
    made = cli("secret", "create", "db", f"PASSWORD={VALUE}", "USER=me")
    assert made.returncode == 0, made.stderr
    assert "PASSWORD, USER" in made.stdout and VALUE not in made.stdout
    path = data_dir / "nbscale" / "secrets" / "db.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert local_store.read_secret("db") == {"PASSWORD": VALUE, "USER": "me"}

    again = cli("secret", "create", "db", "PASSWORD=other")
    assert again.returncode == 1 and "exists already: use --force" in again.stderr
    (tmp_path / "x.env").write_text("FROM_FILE=1\n")
    forced = cli(
        "secret", "create", "db", "B=2", "--from-dotenv", str(tmp_path / "x.env"), "--force"
    )
    assert forced.returncode == 0, forced.stderr
    assert local_store.read_secret("db") == {"FROM_FILE": "1", "B": "2"}

    listed = cli("secret", "list")
    assert listed.stdout.split() == ["db"]
    bad = cli("secret", "create", "db2", "NOEQUALS")
    assert bad.returncode == 1 and "'NOEQUALS' is not KEY=VALUE" in bad.stderr
    assert cli("secret", "delete", "db").returncode == 0
    gone = cli("secret", "delete", "db")
    assert gone.returncode == 1 and "secret 'db' not found" in gone.stderr
    assert cli("secret", "list").stdout == ""


def test_named_secrets_are_read_by_the_control_plane_later_ones_winning():
    local_store.write_secret("base", {"A": "1", "B": "from-base"})
    sources = [
        {"name": "base", "required_keys": ["A"]},
        nbscale.Secret.from_dict({"B": "from-dict"}).to_wire(),
    ]
    assert local_store.resolve_env(sources) == {"A": "1", "B": "from-dict"}
    with pytest.raises(local_store.StoreError, match=r"lacks the required key.* C") as caught:
        local_store.resolve_env([{"name": "base", "required_keys": ["C"]}])
    assert "from-base" not in str(caught.value)
    with pytest.raises(local_store.StoreError, match="nbscale secret create nope") as missing:
        local_store.resolve_env([{"name": "nope"}])
    assert missing.value.missing
    with pytest.raises(nbscale.InvalidError, match="secret name"):
        nbscale.Secret.from_name("no/slashes")


def test_volume_from_name_and_its_cli(data_dir: Path):
    with pytest.raises(nbscale.NotFoundError, match="create_if_missing=True"):
        nbscale.Volume.from_name("results")
    vol = nbscale.Volume.from_name("results", create_if_missing=True)
    assert vol.local_path == data_dir / "nbscale" / "volumes" / "results"
    assert vol.local_path.is_dir() and nbscale.Volume.from_name("results") == vol
    vol.commit()  # no-ops: every worker shares the directory
    vol.reload()
    assert cli("volume", "list").stdout.split() == ["results"]
    (vol.local_path / "kept.txt").write_text("x")
    assert cli("volume", "delete", "results").returncode == 0
    assert not vol.local_path.exists()
    assert cli("volume", "delete", "results").returncode == 1
    with nbscale.Volume.ephemeral() as temporary:
        assert temporary.local_path.is_dir()
    assert not temporary.local_path.exists()


def test_an_app_gives_its_secrets_and_volumes_to_its_functions_which_add_their_own():
    token = nbscale.Secret.from_dict({"TOKEN": "app"})
    mine = nbscale.Secret.from_dict({"TOKEN": "mine"})
    data = nbscale.Volume.from_name("data", create_if_missing=True)
    models = nbscale.Volume.from_name("models", create_if_missing=True)
    app = nbscale.App("vault", secrets=[token], volumes={"/data": data})

    @app.function()
    def inherits(x: Any) -> Any:
        return x

    @app.function(secrets=[mine], volumes={"/models": models}, env={"MODE": "fast"})
    def adds(x: Any) -> Any:
        return x

    @app.cls(volumes={"/data": models})
    class Model:
        @nbscale.method()
        def run(self, x: Any) -> Any:
            return x

    assert inherits.secrets == (token,) and inherits.options.volumes == (("/data", "data"),)
    assert adds.secrets[:2] == (token, mine)
    assert adds.secrets[2].to_wire() == {"env": {"MODE": "fast"}}
    assert adds.options.volumes == (("/data", "data"), ("/models", "models"))
    assert Model.secrets == (token,) and Model.options.volumes == (("/data", "models"),)
    # with_options replaces them, as Modal's does
    other = inherits.with_options(secrets=[mine], volumes={})
    assert other.secrets == (mine,) and other.options.volumes == ()
    with_env = Model.with_options(env={"MODE": "slow"})
    assert with_env.secrets[0] == token and with_env.secrets[1].to_wire()["env"] == {"MODE": "slow"}

    with pytest.raises(nbscale.InvalidError, match=r"use nbscale\.Secret\.from_name"):
        app.function(secrets=["token"])(lambda x: x)
    with pytest.raises(nbscale.InvalidError, match=r"volumes= takes nbscale\.Volume objects"):
        app.function(volumes={"/x": "data"})(lambda x: x)
    with pytest.raises(nbscale.InvalidError, match="two volumes are mounted at /x"):
        app.function(volumes={"/x": data, "/x/": models})(lambda x: x)


def test_the_pool_id_holds_a_digest_of_the_secrets_never_the_values():
    plain = FunctionOptions()
    with_secrets = FunctionOptions(secrets="digest-a")
    other = FunctionOptions(secrets="digest-b")
    ids = {o.pool_id("fn-1") for o in (plain, with_secrets, other)}
    assert len(ids) == 3  # other secrets: another pool, so never a shared worker
    wire = FunctionOptions(volumes=(("/d", "v"),)).to_wire()
    assert FunctionOptions.from_wire(wire).volumes == (("/d", "v"),)

"""One settings table (``nbscale_server/settings.py``) and every copy derived from it: the
client's settings, the server's traits, the control plane's config, ``nbscale config`` and
the README's table. Each test here fails when a copy drifts from the table."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fresh_python_stdout, load_gen_contracts
from traitlets import Enum

import nbscale
from nbscale import _config
from nbscale_server import settings, settings_readme
from nbscale_server.control_plane import ControlPlaneConfig as ReExported
from nbscale_server.extension import NbScale
from nbscale_server.limits import Limits
from nbscale_server.settings import SETTINGS, ControlPlaneConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No NBSCALE_<KEY> variable, no runtime setting, and an empty config file of our own."""
    for setting in _config.SETTINGS.values():
        monkeypatch.delenv(setting.env or "", raising=False)
    path = tmp_path / "config.json"
    monkeypatch.setenv("NBSCALE_CONFIG_FILE", str(path))
    monkeypatch.setattr(_config, "_runtime", {})
    return path


def test_every_trait_is_made_from_the_table():
    traits = NbScale.class_own_traits(config=True)
    assert set(traits) == set(settings.SERVER_SETTINGS)
    for name, setting in settings.SERVER_SETTINGS.items():
        trait = traits[name]
        assert trait.help == setting.full_help and len(trait.help) >= 20, name
        assert trait.default_value == setting.trait_default, name
        if setting.choices:
            assert isinstance(trait, Enum) and tuple(trait.values or ()) == setting.choices
        assert getattr(trait, "min", None) == setting.minimum, name
    help_text = _printed_help()
    for name in settings.SERVER_SETTINGS:
        assert f"--NbScale.{name}=" in help_text


def _printed_help() -> str:
    return fresh_python_stdout(
        "from nbscale_server.extension import NbScale; NbScale.class_print_help()"
    )


def test_every_client_setting_is_in_the_table():
    assert _config.SETTINGS == settings.CLIENT_SETTINGS
    assert set(nbscale.config()) == set(settings.CLIENT_SETTINGS)
    # the names users have in their environments keep working
    for env in ("NBSCALE_MAX_WORKERS", "NBSCALE_WORKER_TRANSPORT", "NBSCALE_LAUNCHER"):
        assert env in {s.env for s in settings.CLIENT_SETTINGS.values()}


def test_a_setting_both_sides_read_has_one_help_text():
    """The client's help once said "default: CPU count" while the code and the server's
    help said twice the CPUs, at least 4: both now come from one row."""
    max_workers = _config.SETTINGS["max_workers"]
    trait = NbScale.class_own_traits()["max_workers_total"]
    assert max_workers.full_help == trait.help
    assert "twice the CPU count, at least 4" in trait.help


def test_the_control_plane_config_holds_exactly_the_control_plane_settings():
    fields = {f.name: f for f in dataclasses.fields(ControlPlaneConfig)}
    limits = {f.name: f.default for f in dataclasses.fields(Limits)}
    rows = {s.name: s for s in SETTINGS.values() if s.scope == "control plane"}
    not_settings = {"limits", "client_endpoint", "store_path"}  # set by the server itself
    assert set(rows) == (set(fields) | set(limits)) - not_settings
    for name, setting in rows.items():
        default = limits[name] if name in limits else fields[name].default
        assert default == setting.trait_default, name
    assert ReExported is ControlPlaneConfig  # control_plane.py's name keeps working


def test_client_and_server_give_the_control_plane_the_same_config(clean_env, monkeypatch):
    values = {
        "max_workers_total": 3,
        "max_pending_inputs": 50,
        "heartbeat_timeout": 7.5,
        "stop_grace": 2.0,
        "worker_transport": "tcp",
        "python": "/usr/bin/python3",
        "launcher": "process",
    }
    for name, value in values.items():
        monkeypatch.setenv(SETTINGS[name].env or "", str(value))
    from_client = _config.control_plane_config()
    from_server = NbScale(**values).control_plane_config()
    assert from_client == from_server
    assert from_client.max_workers_total == 3 and from_client.limits.max_pending_inputs == 50
    assert from_client.heartbeat_timeout == 7.5 and from_client.python == "/usr/bin/python3"


def test_runtime_over_environment_over_file_over_default(clean_env, monkeypatch):
    assert _config.resolve("heartbeat_timeout") == (15.0, "default")
    clean_env.write_text(json.dumps({"heartbeat_timeout": 20, "max_workers": None}))
    assert _config.resolve("heartbeat_timeout") == (20.0, str(clean_env))
    assert _config.resolve("max_workers") == (None, str(clean_env))
    monkeypatch.setenv("NBSCALE_HEARTBEAT_TIMEOUT", "30")
    assert _config.resolve("heartbeat_timeout") == (30.0, "NBSCALE_HEARTBEAT_TIMEOUT")
    nbscale.config(heartbeat_timeout=40)
    assert _config.resolve("heartbeat_timeout") == (40.0, "nbscale.config()")
    nbscale.config(heartbeat_timeout=None)
    assert _config.get("heartbeat_timeout") == 30.0


@pytest.mark.parametrize(
    ("key", "raw", "reason"),
    [
        ("max_workers", "0", "must be at least 1"),
        ("max_workers", "many", "invalid literal"),
        ("max_pending_inputs", 2.5, "expected an integer"),
        ("heartbeat_interval", True, "expected a number"),
        ("launcher", "podman", "expected one of process, docker, slurm, kubernetes, auto"),
        ("base_image", 3, "expected a string"),
        ("allow_all_interfaces", "maybe", "expected true or false"),
    ],
)
def test_a_bad_value_names_the_setting_and_its_source(clean_env, monkeypatch, key, raw, reason):
    clean_env.write_text(json.dumps({key: raw}))
    with pytest.raises(nbscale.InvalidError, match=reason) as info:
        _config.get(key)
    assert f"for {key} (from {clean_env})" in str(info.value)
    if isinstance(raw, str):
        monkeypatch.setenv(f"NBSCALE_{key.upper()}", raw)
        with pytest.raises(nbscale.InvalidError, match=f"from NBSCALE_{key.upper()}"):
            _config.get(key)
    with pytest.raises(nbscale.InvalidError, match=f"bad value .* for {key}: {reason}"):
        nbscale.config(**{key: raw})


def test_a_config_file_that_is_not_an_object_is_refused(clean_env):
    clean_env.write_text("[1, 2]")
    with pytest.raises(nbscale.InvalidError, match="must hold a JSON object"):
        _config.get("progress")


def _nbscale_config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NBSCALE_")}
    return subprocess.run(
        [sys.executable, "-m", "nbscale", "config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **env},
    )


def test_nbscale_config_shows_each_value_and_where_it_comes_from(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"launcher": "docker"}))
    proc = _nbscale_config(NBSCALE_MAX_WORKERS="8", NBSCALE_CONFIG_FILE=str(path))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    assert rows["max_workers"][1:] == ["8", "NBSCALE_MAX_WORKERS"]
    assert rows["launcher"][1:] == ["docker", str(path)]
    assert rows["progress"][1:] == ["auto", "default"]
    assert set(settings.CLIENT_SETTINGS) <= set(rows)
    as_json = json.loads(_nbscale_config("--json", NBSCALE_CONFIG_FILE=str(path)).stdout)
    assert {row["setting"]: row["source"] for row in as_json}["launcher"] == str(path)


def test_nbscale_config_says_which_value_is_bad_and_fails(tmp_path):
    proc = _nbscale_config(
        NBSCALE_LAUNCHER="podman", NBSCALE_CONFIG_FILE=str(tmp_path / "config.json")
    )
    assert proc.returncode == 1
    assert "bad value 'podman' for launcher (from NBSCALE_LAUNCHER)" in proc.stderr
    assert "(invalid)" in proc.stdout and "heartbeat_timeout" in proc.stdout  # the rest shown


def test_the_readme_settings_table_is_the_generated_one():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-contracts"), "--check", "readme"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    readme = (ROOT / "README.md").read_text()
    for setting in SETTINGS.values():
        assert (setting.env or f"`{setting.trait}`") in readme


def test_a_drifted_readme_table_fails_the_check(tmp_path, monkeypatch, capsys):
    gen = load_gen_contracts()
    drifted = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    drifted.write_text(text.replace("| 25000 |", "| 30000 |"))
    monkeypatch.setattr(gen, "README", drifted)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["gen-contracts", "--check", "readme"])
    assert gen.main() == 1
    assert "-| `NBSCALE_MAX_TOTAL_INPUTS` | `max_total_inputs` | 30000 |" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["gen-contracts", "readme"])
    assert gen.main() == 0
    assert drifted.read_text() == text


def test_markdown_is_printed_by_the_module():
    proc = subprocess.run(
        [sys.executable, "-m", "nbscale_server.settings", "--markdown"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout == settings_readme.markdown()

"""Modal's names, as a ported program uses them with `import nbscale as modal`: the module
names (`modal.exception`, `modal.functions`), `App(...)` defaults that functions inherit,
Modal keywords honoured or refused with the reason, and each Modal feature nbscale does not
have raising `InvalidError` that names it. No process is started here."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import fresh_python_stdout

import nbscale
import nbscale.exception
import nbscale.exceptions
from nbscale_runtime.worker import InputCancelled


def test_the_exception_module_has_every_error_and_modal_names_for_the_same():
    module = nbscale.exception
    ours = [
        n
        for n, v in vars(nbscale.exceptions).items()
        if isinstance(v, type) and issubclass(v, BaseException)
    ]
    for name in ours:
        assert getattr(module, name) is getattr(nbscale.exceptions, name)
    assert module.Error is nbscale.Error is nbscale.NbscaleError
    assert module.DeserializationError is nbscale.SerializationError
    assert module.VersionError is nbscale.VersionMismatchError
    assert module.TimeoutError is TimeoutError
    assert issubclass(module.FunctionTimeoutError, module.TimeoutError)  # as on Modal
    assert module.InputCancellation is InputCancelled
    assert issubclass(module.InputCancellation, BaseException)
    assert not issubclass(module.InputCancellation, Exception)
    assert sorted(module.__all__) == module.__all__
    assert set(ours) <= set(module.__all__)
    assert nbscale.functions.FunctionCall is nbscale.FunctionCall


PORTED_IMPORTS = """
import nbscale as modal
from modal.exception import FunctionTimeoutError, NotFoundError
from modal.functions import FunctionCall
from modal import App
import modal.exception
assert FunctionTimeoutError is modal.FunctionTimeoutError and NotFoundError is modal.NotFoundError
assert FunctionCall is modal.FunctionCall and App is modal.App
assert modal.exception.InvalidError is modal.InvalidError
print("ok")
"""


def test_a_ported_programs_imports_work_with_its_one_changed_line():
    # Modal is not installed here: `modal` is nbscale's, so `from modal.x import y` works.
    assert fresh_python_stdout(PORTED_IMPORTS).strip() == "ok"


def test_a_module_named_modal_is_left_alone(tmp_path):
    (tmp_path / "modal.py").write_text("MINE = True\n")
    code = "import nbscale, modal; print(getattr(modal, 'MINE', False))"
    assert fresh_python_stdout(code, cwd=tmp_path).strip() == "True"


def test_is_local_here():
    assert nbscale.is_local() is True


UNSUPPORTED = [
    (lambda: nbscale.web_endpoint(method="POST"), "@modal.web_endpoint", "web ingress"),
    (lambda: nbscale.fastapi_endpoint()(print), "@modal.fastapi_endpoint", "web ingress"),
    (lambda: nbscale.asgi_app()(print), "@modal.asgi_app", "web ingress"),
    (lambda: nbscale.wsgi_app(print), "@modal.wsgi_app", "web ingress"),
    (lambda: nbscale.web_server(8000), "@modal.web_server", "web ingress"),
    (lambda: nbscale.Cron("0 * * * *"), "modal.Cron", "no scheduler"),
    (lambda: nbscale.Period(days=1), "modal.Period", "no scheduler"),
    (lambda: nbscale.Sandbox.create("sleep", "1"), "modal.Sandbox", "not sandboxes"),
    (lambda: nbscale.Sandbox.from_id("sb-1"), "modal.Sandbox", "not sandboxes"),
    (lambda: nbscale.NetworkFileSystem.from_name("x"), "modal.NetworkFileSystem", "volumes"),
    (lambda: nbscale.CloudBucketMount("b"), "modal.CloudBucketMount", "own machines"),
    (lambda: nbscale.Mount.from_local_dir("."), "modal.Mount", "add_local_dir"),
    (lambda: nbscale.Proxy.from_name("p"), "modal.Proxy", "own network"),
    (lambda: nbscale.Tunnel(8000), "modal.Tunnel", "web ingress"),
    (lambda: nbscale.forward(8000), "modal.forward", "web ingress"),
    (lambda: nbscale.interact(), "modal.interact", "no terminal"),
    (lambda: nbscale.App.lookup("a"), "modal.App.lookup", "Sandboxes"),
]


@pytest.mark.parametrize(("use", "feature", "why"), UNSUPPORTED)
def test_a_modal_feature_nbscale_lacks_says_so(use: Any, feature: str, why: str):
    with pytest.raises(nbscale.exception.InvalidError) as caught:
        use()
    assert str(caught.value).startswith(f"{feature} is not supported by nbscale: ")
    assert why in str(caught.value)


@pytest.mark.parametrize(
    ("keyword", "value", "why"),
    [
        ("schedule", "every day", "no scheduler"),
        ("region", "us-east", "cloud regions"),
        ("cloud", "aws", "not in a cloud"),
        ("enable_memory_snapshot", True, "snapshot"),
        ("proxy", "p", "own network"),
        ("i6pn", True, "own network"),
        ("ephemeral_disk", 10240, "disk of the machine"),
        ("block_network", True, "control plane"),
        ("network_file_systems", {"/n": "nfs"}, "volumes"),
        ("startup_timeout", 600, "NBSCALE_STARTUP_TIMEOUT"),
    ],
)
def test_a_function_keyword_nbscale_cannot_honour_is_refused(keyword: str, value: Any, why: str):
    app = nbscale.App("refused")
    with pytest.raises(nbscale.InvalidError, match=f"@app.function\\({keyword}=...\\)") as caught:
        app.function(**{keyword: value})(lambda x: x)
    assert why in str(caught.value)
    assert app.registered_functions == {}


def test_modal_keywords_at_their_defaults_ask_for_nothing_and_are_accepted():
    app = nbscale.App("defaults", tags={"team": "ml"})
    f = app.function(
        schedule=None,
        region=None,
        cloud=None,
        proxy=None,
        enable_memory_snapshot=False,
        block_network=False,
        network_file_systems={},
        serialized=True,
        nonpreemptible=True,
        restrict_modal_access=True,
    )(lambda x: x)
    assert list(app.registered_functions.values()) == [f]
    assert app.tags == {"team": "ml"}


def test_old_and_unknown_keywords():
    app = nbscale.App("old")
    with pytest.raises(nbscale.InvalidError, match="old name: use max_containers"):
        app.function(concurrency_limit=4)(lambda x: x)
    with pytest.raises(nbscale.InvalidError, match="old name: use min_containers"):
        app.function(keep_warm=1)(lambda x: x)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        app.function(colour="blue")(lambda x: x)
    with pytest.raises(nbscale.InvalidError, match=r"nbscale.App\(mounts=...\)"):
        nbscale.App("m", mounts=["m"])
    with pytest.raises(nbscale.InvalidError, match="interactive"):
        app.run(interactive=True)
    with pytest.raises(nbscale.InvalidError, match="environment"):
        app.run(environment_name="prod")


def test_app_defaults_are_inherited_and_a_function_overrides_them():
    base = nbscale.Image.debian_slim()
    other = base.pip_install("requests")
    app = nbscale.App("defaults", image=base, secrets=[], volumes={})  # empty: nothing asked

    @app.function()
    def inherits(x):
        return x

    @app.function(image=other)
    def overrides(x):
        return x

    assert inherits.image is base and overrides.image is other
    assert inherits.app is app and inherits.with_options(timeout=5).app is app
    with pytest.raises(nbscale.InvalidError, match=r"use nbscale.Secret.from_name"):
        nbscale.App("vault", secrets=["a-secret"])
    assert nbscale.App("plain").image is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nbscale.App("x", image="python:3.11"), "image must be an nbscale.Image"),
        (lambda: nbscale.App("x", include_source="yes"), "include_source"),
        (lambda: nbscale.App("x").function(serialized="no")(print), "serialized"),
    ],
)
def test_bad_app_settings_are_refused(make: Any, message: str):
    with pytest.raises(nbscale.InvalidError, match=message):
        make()


def test_a_local_entrypoint_called_directly_runs_here():
    app = nbscale.App("entry")
    seen = []

    @app.local_entrypoint()
    def main(n: int = 2):
        seen.append(n)
        return n * 10

    @app.local_entrypoint
    async def amain(n: int = 3):
        return n * 100

    assert main(4) == 40 and seen == [4]
    assert amain() == 300  # no loop runs here: run to completion, as python FILE.py needs
    assert {n.rsplit(".", 1)[1] for n in app.registered_entrypoints} == {"main", "amain"}
    assert main.__name__ == "main" and main.app is app
    with pytest.raises(nbscale.InvalidError, match="local entrypoint"):
        app.function(main)

"""``nbscale.Image``: the Dockerfile each method emits, the kernel mirror and the content-hash
tag, without a Docker engine."""

from __future__ import annotations

import importlib.metadata as metadata
import sys

import cloudpickle
import numpy as np
import pytest

import nbscale
from nbscale import _image_tags, _kernel_env
from nbscale._image_build import image_tag, plan, platform_tags

PLATFORMS = platform_tags("x86_64", (2, 36))


def test_from_kernel_pins_this_kernels_versions():
    image = nbscale.Image.from_kernel()
    assert image.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert image.base == "nbscale/base:bookworm"
    dockerfile = plan(image).dockerfile
    for dist in ("pyzmq", "cloudpickle", "tblib", "numpy"):
        assert f"{dist}=={metadata.version(dist)}" in dockerfile
    assert dockerfile.startswith("FROM nbscale/base:bookworm\n")
    assert "COPY .nbscale/nbscale_runtime /opt/nbscale/runtime/nbscale_runtime" in dockerfile
    # the client too, for functions that call functions
    assert "COPY .nbscale/nbscale /opt/nbscale/runtime/nbscale\n" in dockerfile
    assert "COPY .nbscale/nbscale_server /opt/nbscale/runtime/nbscale_server" in dockerfile
    assert "venv --system-site-packages /opt/venv" in dockerfile


def test_from_kernel_mirrors_requested_packages_with_their_requirements():
    image = nbscale.Image.from_kernel("pytest")
    pins = plan(image).dockerfile
    assert f"pytest=={metadata.version('pytest')}" in pins
    assert f"pluggy=={metadata.version('pluggy')}" in pins  # pytest requires it
    with pytest.raises(nbscale.InvalidError, match="not installed in this kernel"):
        nbscale.Image.from_kernel("no-such-distribution-here")


def test_base_image_is_a_setting(monkeypatch):
    monkeypatch.setenv("NBSCALE_BASE_IMAGE", "registry.example/python:3.11")
    assert nbscale.Image.debian_slim().base == "registry.example/python:3.11"


def test_every_method_emits_its_dockerfile_lines(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("hello")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.txt").write_text("a")
    image = (
        nbscale.Image.debian_slim("3.11")
        .apt_install("git", ["curl"])
        .pip_install("six==1.17.0")
        .run_commands("echo one", "echo 'two'")
        .env({"GREETING": 'say "hi"'})
        .workdir("/srv")
        .add_local_dir(str(tmp_path / "pkg"), "/srv/pkg")
        .add_local_file(str(data), "/srv/")
    )
    p = plan(image)
    lines = p.dockerfile.splitlines()
    assert (
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
        "--no-install-recommends git curl && rm -rf /var/lib/apt/lists/*"
    ) in lines
    assert "COPY .nbscale/wheels-2 /tmp/nbscale-wheels-2" in lines
    assert (
        "RUN python3 -m pip install --no-index --find-links /tmp/nbscale-wheels-2 six==1.17.0 "
        "&& rm -rf /tmp/nbscale-wheels-2"
    ) in lines
    assert [line for line in lines if "echo" in line] == ["RUN echo one", "RUN echo 'two'"]
    assert 'ENV GREETING="say \\"hi\\""' in lines
    assert "WORKDIR /srv" in lines
    assert "COPY .nbscale/local-6 /srv/pkg" in lines
    assert "COPY .nbscale/local-7/data.txt /srv/data.txt" in lines
    assert p.wheels[".nbscale/wheels-2"] == ("six==1.17.0",)
    assert p.copies[".nbscale/local-7/data.txt"] == str(data)
    assert repr(image).startswith("<nbscale.Image debian_slim(3.11).apt_install(2)")


def test_registry_and_dockerfile_bases(tmp_path):
    assert plan(nbscale.Image.from_registry("python:3.11-slim")).dockerfile.startswith(
        "FROM python:3.11-slim\n"
    )
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim AS base\nUSER nobody\n")
    image = nbscale.Image.from_dockerfile(str(dockerfile))
    assert image.context_dir == str(tmp_path)
    text = plan(image).dockerfile
    assert text.startswith("FROM python:3.11-slim AS base\nUSER nobody\nUSER root\n")


def test_local_python_source_goes_on_the_workers_path(tmp_path, monkeypatch):
    (tmp_path / "mymod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    p = plan(nbscale.Image.from_kernel().add_local_python_source("mymod"))
    assert "COPY .nbscale/local-2/mymod.py /opt/nbscale/src/mymod.py" in p.dockerfile
    assert "PYTHONPATH=/opt/nbscale/runtime:/opt/nbscale/src" in p.dockerfile
    with pytest.raises(nbscale.InvalidError, match="cannot find module"):
        nbscale.Image.from_kernel().add_local_python_source("no_such_module_here")


def test_bad_arguments_are_invalid(tmp_path):
    image = nbscale.Image.from_kernel()
    with pytest.raises(nbscale.InvalidError):
        image.workdir("relative")
    with pytest.raises(nbscale.InvalidError):
        image.env({"A": 1})  # type: ignore[dict-item]
    with pytest.raises(nbscale.InvalidError):
        image.add_local_dir(str(tmp_path / "missing"), "/x")
    with pytest.raises(nbscale.InvalidError):
        image.add_local_file(__file__, "relative/path")
    with pytest.raises(nbscale.InvalidError):
        nbscale.Image.debian_slim("three")
    with pytest.raises(nbscale.InvalidError, match=r"must be an nbscale\.Image"):
        nbscale.App("x").function(image="python:3.11")(lambda: None)


def test_tag_is_a_content_hash(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("one")
    image = nbscale.Image.from_kernel().add_local_file(str(data), "/srv/data.txt")
    tag = image_tag(plan(image), "sha256:base", PLATFORMS)
    assert tag.startswith("nbscale/worker:") and len(tag.split(":")[1]) == 16
    assert image_tag(plan(image), "sha256:base", PLATFORMS) == tag  # unchanged: same tag
    data.write_text("two")
    assert image_tag(plan(image), "sha256:base", PLATFORMS) != tag  # a file changed
    data.write_text("one")
    assert image_tag(plan(image), "sha256:other", PLATFORMS) != tag  # the base changed
    assert image_tag(plan(image.env({"A": "1"})), "sha256:base", PLATFORMS) != tag


def test_platform_tags_cover_manylinux_up_to_the_glibc():
    tags = platform_tags("x86_64", (2, 36))
    assert tags[0] == "manylinux_2_36_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_37_x86_64" not in tags
    assert "manylinux2014_aarch64" in platform_tags("aarch64", (2, 28))


def _uses_numpy_global(x):
    return np.sum(x)


def test_the_default_image_mirrors_what_the_function_uses():
    def imports_inside(x):
        import pytest  # noqa: F401 - what matters is that it is imported

        return x

    array = np.zeros(3)

    def closes_over_an_array():
        return array.sum()

    assert _kernel_env.distributions_used_by(_uses_numpy_global) == []  # by reference here
    assert "pytest" in _kernel_env.modules_used_by(imports_inside)
    assert _kernel_env.distributions_used_by(imports_inside) == ["pytest"]
    assert _kernel_env.distributions_used_by(closes_over_an_array) == ["numpy"]
    assert _kernel_env.modules_used_by(lambda: sys.path) == set()  # standard library


def test_modals_other_installers_give_the_same_wheels(tmp_path):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# pinned\nsix==1.17.0  # for the example\n\nidna\n")
    base = nbscale.Image.debian_slim("3.11")
    pip = plan(base.pip_install("six==1.17.0", "idna", "tblib")).dockerfile
    assert plan(base.uv_pip_install("six==1.17.0", "idna", "tblib")).dockerfile == pip
    from_file = base.uv_pip_install("tblib", requirements=[str(reqs)])
    assert plan(from_file).wheels[".nbscale/wheels-1"] == ("tblib", "six==1.17.0", "idna")
    from_file = base.pip_install_from_requirements(str(reqs))
    assert plan(from_file).wheels[".nbscale/wheels-1"] == ("six==1.17.0", "idna")
    reqs.write_text("six\n--index-url https://example.org/simple\n")
    with pytest.raises(nbscale.InvalidError, match=r"requirements.txt:2: '--index-url"):
        base.pip_install_from_requirements(str(reqs))
    with pytest.raises(nbscale.InvalidError, match="cannot read the requirements file"):
        base.uv_pip_install(requirements=[str(tmp_path / "missing.txt")])


PYPROJECT = """
[project]
name = "sweep"
dependencies = ["six==1.17.0", "idna"]

[project.optional-dependencies]
plots = ["tblib"]
"""


def test_pip_install_from_pyproject_installs_its_dependencies(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    base = nbscale.Image.debian_slim("3.11")
    image = base.pip_install_from_pyproject(str(pyproject), optional_dependencies=["plots"])
    assert plan(image).wheels[".nbscale/wheels-1"] == ("six==1.17.0", "idna", "tblib")
    with pytest.raises(nbscale.InvalidError, match="no optional dependencies gpu"):
        base.pip_install_from_pyproject(str(pyproject), optional_dependencies=["gpu"])


@pytest.mark.parametrize(
    ("use", "feature", "why"),
    [
        (lambda i: i.imports(), "Image.imports()", "import the package inside the function"),
        (lambda i: i.run_function(print), "Image.run_function", "not yet: run the setup"),
        (lambda i: i.dockerfile_commands(["RUN x"]), "Image.dockerfile_commands", "not yet"),
        (lambda i: i.micromamba_install("numpy"), "Image.micromamba", "no conda"),
        (lambda i: i.uv_sync(), "Image.uv_sync", "pip_install_from_requirements"),
        (lambda i: nbscale.Image.from_aws_ecr("x"), "Image.from_aws_ecr", "registry login"),
        (lambda i: nbscale.Image.from_name("x"), "Image.from_name", "Modal-hosted"),
    ],
)
def test_modals_image_methods_nbscale_lacks_say_so(use, feature, why):
    with pytest.raises(nbscale.InvalidError) as caught:
        use(nbscale.Image.debian_slim("3.11"))
    assert str(caught.value).startswith(f"{feature} is not supported by nbscale: ")
    assert why in str(caught.value)


def test_an_image_pickled_after_its_build_carries_its_tag(monkeypatch):
    """What lets a Docker worker's nested call run a function in the image it declares: the
    kernel's tag travels with the image (a container has no engine to build or ask)."""
    built = nbscale.Image.debian_slim().env({"A": "1"})
    never = nbscale.Image.debian_slim().env({"A": "2"})
    monkeypatch.setattr(_image_tags, "_TAGS", {})
    _image_tags.remember(built, "nbscale.local/worker:built")
    payload = cloudpickle.dumps((built, never))
    monkeypatch.setattr(_image_tags, "_TAGS", {})  # as in a worker's process
    built_there, never_there = cloudpickle.loads(payload)
    assert (built_there, never_there) == (built, never)
    assert _image_tags.tag_of(built_there) == "nbscale.local/worker:built"
    assert _image_tags.tag_of(never_there) is None


def test_the_images_a_function_calls_are_found_in_its_code():
    app = nbscale.App("images-called")
    image = nbscale.Image.debian_slim().env({"B": "1"})

    @app.function(image=image)
    def inner(x):
        return x

    @app.function()
    def plain(x):
        return x

    def outer(x):
        return [inner.remote(x) for _ in range(2)] + [plain.remote(x)]  # a nested scope

    assert _image_tags.images_called_by(outer) == [image]
    assert _image_tags.images_called_by(plain.raw_f) == []


class EngineSeen:
    """An engine on which every image exists, as the image build asks it, counting the
    ``info`` calls (10-30 ms each on a real engine)."""

    def __init__(self, base_architecture: str, machine: str) -> None:
        self.base_architecture, self.machine, self.infos = base_architecture, machine, 0
        self.api = self

    def inspect_image(self, name: str) -> dict[str, object]:
        return {"Id": "sha256:base", "Architecture": self.base_architecture, "Config": {}}

    def info(self) -> dict[str, str]:
        self.infos += 1
        return {"Architecture": self.machine}


@pytest.mark.parametrize(
    "base_architecture, machine, infos",
    [("amd64", "x86_64", 0), ("arm64", "aarch64", 0), ("arm", "armv7l", 1)],
)
def test_the_wheels_platform_is_the_base_images_and_the_tag_is_as_before(
    base_architecture, machine, infos
):
    """The tag is the one the engine's ``info`` gave before (images built then are found),
    without asking for it when the base image names its architecture in Go's words that
    pip's tags translate (arm's variants do not: info is asked)."""
    from nbscale._image_build import build

    image = nbscale.Image.from_kernel()
    engine = EngineSeen(base_architecture, machine)
    tag = build(image, engine)
    assert tag == image_tag(plan(image), "sha256:base", platform_tags(machine, image.glibc))
    assert engine.infos == infos

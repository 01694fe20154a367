"""``nbscale.Image``: a worker image described the way Modal describes one.

Each method returns a new ``Image`` with one more layer; nothing is built until a function
that uses the image first runs (or ``nbscale images build``). ``_image_build.py`` turns the
layers into a Dockerfile and builds it, with no registry needed:

- the base is ``NBSCALE_BASE_IMAGE`` (``debian_slim``, ``from_kernel``), made offline by
  ``scripts/docker-setup``, or an image of your own (``from_registry``, ``from_dockerfile``);
- ``pip_install`` packages are downloaded as wheels on this host (``pip download``) and
  installed in the image from that wheelhouse, so the build itself needs no network;
- every image gets a virtualenv at ``/opt/venv`` (seeing the base's own packages) holding
  nbscale's runtime and its dependencies at this kernel's versions.

An image is tagged by a hash of everything it is made of, so an unchanged image is never
rebuilt and a changed one rebuilds only from the first changed layer.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from . import _config, _image_tags, _kernel_env
from ._unsupported import refuser
from .exceptions import InvalidError

_NO_TOP_LEVEL = (
    "a module's top level does not run on workers (functions travel by value): import the "
    "package inside the function that uses it"
)
_NO_RUN_FUNCTION = (
    "not yet: run the setup with run_commands (python -c ...), or once per worker from the "
    "function (a module-level cache)"
)
_NO_DOCKERFILE_COMMANDS = "not yet: use run_commands, or a Dockerfile with from_dockerfile"
_NO_CONDA = "no conda environments: use pip_install or apt_install, or a conda base image"
_EXPORT = (
    "not yet: export a requirements file (poetry export, uv export) and use "
    "pip_install_from_requirements"
)
_NO_PRIVATE_REPOS = "not yet: pip_install a wheel or a URL that this host can download"
_PULL_IT = "there is no registry login: pull the image on the Docker host, then from_registry"

# The glibc of the bases, for choosing manylinux wheels: Debian bookworm has 2.36; for an
# image of unknown origin, 2.28 is what current distributions all have.
BOOKWORM_GLIBC = (2, 36)
DEFAULT_GLIBC = (2, 28)
SOURCE_DIR = "/opt/nbscale/src"  # add_local_python_source puts modules here (on PYTHONPATH)


@dataclass(frozen=True, slots=True)
class Layer:
    """One step of an image: ``kind`` is pip, apt, run, env, workdir or copy."""

    kind: str
    values: tuple[str, ...] = ()
    source: str | None = None  # copy: a local file or directory
    target: str | None = None  # copy: where it goes in the image


@dataclass(frozen=True, slots=True)
class Image:
    """A worker image: a base plus layers. Build one with the class methods
    (``Image.from_kernel()``, ``Image.debian_slim()``, ``Image.from_registry(tag)``,
    ``Image.from_dockerfile(path)``) and extend it with ``.pip_install(...)``,
    ``.uv_pip_install(...)``, ``.pip_install_from_requirements(path)``,
    ``.apt_install(...)``, ``.run_commands(...)``, ``.env({...})``, ``.workdir(path)``,
    ``.add_local_dir/.add_local_file/.add_local_python_source``."""

    base: str | None  # the FROM image; None for from_dockerfile
    python_version: str
    glibc: tuple[int, int] = DEFAULT_GLIBC
    dockerfile: str | None = None  # from_dockerfile: its path
    context_dir: str | None = None  # from_dockerfile: its build context
    layers: tuple[Layer, ...] = ()
    description: str = ""

    def __repr__(self) -> str:
        return f"<nbscale.Image {self.description}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled with the code that calls it: the tag it was built under goes along, for a
        # Docker worker's nested calls (``_image_tags``)
        values = tuple(getattr(self, f.name) for f in fields(self))
        return (_unpickle_image, (values, _image_tags.tag_of(self)))

    # --- bases --------------------------------------------------------------------------

    @staticmethod
    def debian_slim(python_version: str | None = None) -> Image:
        """Debian bookworm with Python: the offline base ``NBSCALE_BASE_IMAGE`` (default
        ``nbscale/base:bookworm``). Its Python must be ``python_version`` (default: this
        kernel's)."""
        version = _python_version(python_version)
        return Image(
            base=_config.get("base_image"),
            python_version=version,
            glibc=BOOKWORM_GLIBC,
            description=f"debian_slim({version})",
        )

    @staticmethod
    def from_registry(tag: str, python_version: str | None = None) -> Image:
        """Any image with ``python3`` (and its venv module) on the PATH, pulled from a
        registry when this Docker host does not have it yet."""
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidError(f"from_registry needs an image tag, got {tag!r}")
        version = _python_version(python_version)
        return Image(base=tag, python_version=version, description=f"from_registry({tag})")

    @staticmethod
    def from_dockerfile(
        path: str, context_dir: str | None = None, python_version: str | None = None
    ) -> Image:
        """Your Dockerfile (its final stage must have ``python3``), built with
        ``context_dir`` (default: the Dockerfile's directory) as its context."""
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise InvalidError(f"from_dockerfile: no file {path}")
        context = os.path.abspath(context_dir or os.path.dirname(path))
        if not os.path.isdir(context):
            raise InvalidError(f"from_dockerfile: no directory {context}")
        return Image(
            base=None,
            python_version=_python_version(python_version),
            dockerfile=path,
            context_dir=context,
            description=f"from_dockerfile({os.path.basename(path)})",
        )

    @staticmethod
    def from_kernel(*packages: str) -> Image:
        """The default image: ``debian_slim`` with this kernel's Python minor version and
        the very versions installed here of numpy (and nvidia-ml-py) when present, of
        ``packages`` (distribution names) and of everything they require."""
        wanted = [p for p in _kernel_env.MIRRORED_WHEN_PRESENT if _kernel_env.installed_version(p)]
        wanted += packages
        missing = [p for p in packages if _kernel_env.installed_version(p) is None]
        if missing:
            raise InvalidError(f"from_kernel: not installed in this kernel: {', '.join(missing)}")
        image = Image.debian_slim()
        pins = _kernel_env.pinned_closure(wanted, exclude=_kernel_env.RUNTIME_DISTRIBUTIONS)
        if pins:
            image = image.pip_install(*pins)
        names = ", ".join(packages)
        return replace(image, description=f"from_kernel({names})")

    # --- layers -------------------------------------------------------------------------

    def _with(self, layer: Layer, call: str) -> Image:
        return replace(self, layers=(*self.layers, layer), description=f"{self.description}.{call}")

    def pip_install(self, *packages: str | Iterable[str]) -> Image:
        """Install Python packages (requirement strings) from wheels downloaded on this
        host for the image's Python and platform."""
        names = _strings(packages, "pip_install")
        return self._with(Layer("pip", names), f"pip_install({len(names)})") if names else self

    def uv_pip_install(
        self, *packages: str | Iterable[str], requirements: Iterable[str] | None = None
    ) -> Image:
        """Modal's faster installer: the same packages as ``pip_install`` (nbscale installs
        them from wheels downloaded on this host either way), plus those of the
        ``requirements`` files."""
        from_files = [_requirements(path) for path in requirements or ()]
        names = _strings((*packages, *from_files), "uv_pip_install")
        return self._with(Layer("pip", names), f"uv_pip_install({len(names)})") if names else self

    def pip_install_from_requirements(self, requirements_txt: str) -> Image:
        """Install the packages a requirements file of this host lists."""
        names = _requirements(requirements_txt)
        described = f"pip_install_from_requirements({requirements_txt})"
        return self._with(Layer("pip", names), described) if names else self

    def pip_install_from_pyproject(
        self, pyproject_toml: str, optional_dependencies: Iterable[str] = ()
    ) -> Image:
        """Install the ``[project] dependencies`` of a pyproject.toml of this host, and
        those of the named ``optional_dependencies`` groups."""
        names = _pyproject_dependencies(pyproject_toml, tuple(optional_dependencies))
        described = f"pip_install_from_pyproject({pyproject_toml})"
        return self._with(Layer("pip", names), described) if names else self

    # Modal's image methods that nbscale lacks: each raises InvalidError naming itself.
    imports = refuser("Image.imports()", _NO_TOP_LEVEL)
    run_function = refuser("Image.run_function", _NO_RUN_FUNCTION)
    dockerfile_commands = refuser("Image.dockerfile_commands", _NO_DOCKERFILE_COMMANDS)
    micromamba = micromamba_install = refuser("Image.micromamba", _NO_CONDA)
    poetry_install_from_file = refuser("Image.poetry_install_from_file", _EXPORT)
    uv_sync = refuser("Image.uv_sync", _EXPORT)
    pip_install_private_repos = refuser("Image.pip_install_private_repos", _NO_PRIVATE_REPOS)
    from_aws_ecr = from_gcp_artifact_registry = refuser("Image.from_aws_ecr", _PULL_IT)
    from_name = from_id = refuser("Image.from_name", "there are no Modal-hosted images")

    def apt_install(self, *packages: str | Iterable[str]) -> Image:
        """Install Debian packages (this build step needs the image's apt sources)."""
        names = _strings(packages, "apt_install")
        return self._with(Layer("apt", names), f"apt_install({len(names)})") if names else self

    def run_commands(self, *commands: str | Iterable[str]) -> Image:
        """Run shell commands in the image, one layer each (as root, at build time)."""
        lines = _strings(commands, "run_commands")
        return self._with(Layer("run", lines), "run_commands()") if lines else self

    def env(self, variables: dict[str, str]) -> Image:
        """Set environment variables for every later layer and for the worker."""
        if not isinstance(variables, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
        ):
            raise InvalidError("env takes a dict of str to str")
        values = tuple(f"{k}={v}" for k, v in sorted(variables.items()))
        return self._with(Layer("env", values), "env()") if values else self

    def env_variables(self) -> dict[str, str]:
        """The variables its ``env`` layers set (a later layer's value wins)."""
        pairs = (
            v.split("=", 1) for layer in self.layers if layer.kind == "env" for v in layer.values
        )
        return dict(pairs)

    def workdir(self, path: str) -> Image:
        """The directory later layers run in, and where the worker starts."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidError(f"workdir needs an absolute path, got {path!r}")
        return self._with(Layer("workdir", (path,)), f"workdir({path})")

    def add_local_dir(self, local_path: str, remote_path: str) -> Image:
        """Copy a directory of this host into the image (a change rebuilds from here on)."""
        local = os.path.abspath(os.path.expanduser(local_path))
        if not os.path.isdir(local):
            raise InvalidError(f"add_local_dir: no directory {local}")
        return self._with(_copy(local, remote_path), f"add_local_dir({local_path})")

    def add_local_file(self, local_path: str, remote_path: str) -> Image:
        """Copy a file of this host into the image; a ``remote_path`` ending in "/" keeps
        the file's name."""
        local = os.path.abspath(os.path.expanduser(local_path))
        if not os.path.isfile(local):
            raise InvalidError(f"add_local_file: no file {local}")
        if remote_path.endswith("/"):
            remote_path += os.path.basename(local)
        return self._with(_copy(local, remote_path), f"add_local_file({local_path})")

    def add_local_python_source(self, *modules: str) -> Image:
        """Copy your own modules or packages (importable here, by name) into the image so
        workers can import them: needed for functions defined in a module of yours rather
        than in the notebook, since those travel by reference."""
        image = self
        for name in modules:
            spec = importlib.util.find_spec(name) if isinstance(name, str) else None
            if spec is None or spec.origin in (None, "built-in", "frozen"):
                raise InvalidError(f"add_local_python_source: cannot find module {name!r}")
            if "." in name:
                raise InvalidError(f"add_local_python_source takes top-level names, got {name!r}")
            if spec.submodule_search_locations:
                source = next(iter(spec.submodule_search_locations))
                target = f"{SOURCE_DIR}/{name}"
            else:
                source = str(spec.origin)
                target = f"{SOURCE_DIR}/{os.path.basename(source)}"
            image = image._with(_copy(source, target), f"add_local_python_source({name})")
        return image


def _python_version(version: str | None) -> str:
    version = version or _kernel_env.python_minor()
    parts = version.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise InvalidError(f"python_version must look like '3.11', got {version!r}")
    return ".".join(parts[:2])


def _strings(items: tuple[Any, ...], method: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in items:
        values = [item] if isinstance(item, str) else list(item)
        for value in values:
            if not isinstance(value, str) or not value.strip():
                raise InvalidError(f"{method} takes strings, got {value!r}")
            out.append(value.strip())
    return tuple(out)


def _requirements(path: str) -> tuple[str, ...]:
    """The requirement strings of a requirements file: one a line, comments and blank lines
    left out; pip's options (``-r``, ``--index-url``, ...) are refused, naming the line."""
    try:
        with open(os.path.expanduser(path)) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise InvalidError(f"cannot read the requirements file {path}: {exc.strerror}") from None
    found = []
    for number, line in enumerate(lines, 1):
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("-"):
            raise InvalidError(
                f"{path}:{number}: {text!r}: only requirement strings are supported, not "
                "pip's options"
            )
        found.append(text)
    return tuple(found)


def _pyproject_dependencies(path: str, groups: tuple[str, ...]) -> tuple[str, ...]:
    """The requirement strings of a pyproject.toml's ``[project]`` table."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidError(f"cannot read the pyproject file {path}: {exc}") from None
    optional = project.get("optional-dependencies", {})
    missing = [group for group in groups if group not in optional]
    if missing:
        raise InvalidError(f"{path} has no optional dependencies {', '.join(missing)}")
    found = [*project.get("dependencies", ())]
    for group in groups:
        found += optional[group]
    return _strings((found,), "pip_install_from_pyproject")


def _copy(source: str, target: str) -> Layer:
    if not isinstance(target, str) or not target.startswith("/"):
        raise InvalidError(f"the path in the image must be absolute, got {target!r}")
    return Layer("copy", source=source, target=target)


def _unpickle_image(values: tuple[Any, ...], tag: str | None) -> Image:
    return _image_tags.restore(Image(*values), tag)


def outside_containers(image: Image, function_name: str, launcher: str) -> str:
    """What a function that declares ``image`` is told when its workers are not containers
    (local processes, Slurm jobs): they run this host's Python environment, so only the
    image's ``env`` variables apply (set as the function's ``env`` would be, which wins)."""
    where = {"process": "local processes", "slurm": "Slurm jobs"}.get(launcher, launcher)
    applied = sorted(image.env_variables())
    env = f"; its env variables apply ({', '.join(applied)})" if applied else ""
    return (
        f"{function_name}: its image {image.description} is not built: the workers are "
        f"{where}, which run this Python environment and its packages{env}"
    )

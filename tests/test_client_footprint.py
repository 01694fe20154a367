"""The client that worker images carry (for nested calls) imports only what they have.

A worker image holds the runtime's own dependencies (``_kernel_env.RUNTIME_DISTRIBUTIONS``)
and nbscale's source, nothing else: a module of the client that reaches psutil, Docker's SDK
or Jupyter fails every nested call made in a container, and only the Docker suite would say
so, minutes later. This checks it in a second.
"""

from __future__ import annotations

import json
import os

from conftest import fresh_python_stdout

from nbscale._kernel_env import RUNTIME_DISTRIBUTIONS

_IMPORT_NAMES = {"pyzmq": "zmq"}  # distributions whose module has another name
# Not distributions: the names Cython extensions (pyzmq's) register, and nbscale's alias
# for ``import modal`` where Modal is absent.
_NOT_DISTRIBUTIONS = {"cython_runtime", "modal"}


def test_the_client_imports_only_what_worker_images_carry() -> None:
    code = (
        "import json, sys\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        "import nbscale, nbscale._client, nbscale._nested\n"
        "after = {m.split('.')[0] for m in sys.modules}\n"
        "print(json.dumps(sorted(after - before - set(sys.stdlib_module_names))))\n"
    )
    # On a worker, the import starts no zygote and loads no control plane (_prestart.py).
    out = fresh_python_stdout(code, env={**os.environ, "NBSCALE_ZYGOTE_AT_IMPORT": "0"})
    imported = set(json.loads(out))
    allowed = {_IMPORT_NAMES.get(d, d) for d in RUNTIME_DISTRIBUTIONS}
    allowed |= {"nbscale", "nbscale_server", "nbscale_runtime"} | _NOT_DISTRIBUTIONS
    extra = {m for m in imported - allowed if not m.startswith("_cython")}
    assert not extra, f"the client imports modules worker images do not have: {sorted(extra)}"

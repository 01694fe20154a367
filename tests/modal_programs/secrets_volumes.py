# Ported from Modal's guides "Secrets" (modal.com/docs/guide/secrets) and "Volumes"
# (modal.com/docs/guide/volumes): a function reads credentials from a Secret made with
# `modal secret create` (here `nbscale secret create example-db-credentials DB_USER=...
# DB_PASSWORD=...`), another from Secret.from_dict; a map writes shards to a Volume that
# another function sums after `reload()`. Changed: `import modal` -> `import nbscale as modal`;
# the mount path, "/data" in the guide, is VOLUME_PATH (default "/data"): a worker process
# cannot mount, and making /data needs root, so the tests mount it under their own directory.
# Run with: nbscale run secrets_volumes.py

import os

import nbscale as modal

app = modal.App("example-secrets-volumes")
VOLUME_PATH = os.environ.get("VOLUME_PATH", "/data")
volume = modal.Volume.from_name("example-shards", create_if_missing=True)


@app.function(secrets=[modal.Secret.from_name("example-db-credentials")])
def connect() -> str:
    user = os.environ["DB_USER"]
    password = os.environ["DB_PASSWORD"]
    return f"connected as {user} with a password of {len(password)} characters"


@app.function(secrets=[modal.Secret.from_dict({"GREETING": "hello"})])
def greet(name: str) -> str:
    return f"{os.environ['GREETING']} {name}"


@app.function(volumes={VOLUME_PATH: volume})
def write_shard(i: int) -> str:
    path = os.path.join(VOLUME_PATH, f"shard-{i}.txt")
    with open(path, "w") as f:
        f.write(str(i * i))
    volume.commit()  # Modal's guide: persist the writes before the function returns
    return path


@app.function(volumes={VOLUME_PATH: volume})
def total() -> int:
    volume.reload()  # see what other containers committed
    names = sorted(n for n in os.listdir(VOLUME_PATH) if n.startswith("shard-"))
    return sum(int(open(os.path.join(VOLUME_PATH, n)).read()) for n in names)


@app.local_entrypoint()
def main(shards: int = 6):
    print(connect.remote())
    print("greetings", list(greet.map(["secrets", "volumes"])))
    written = list(write_shard.map(range(shards)))
    print("written", len(written))
    print("total", total.remote())

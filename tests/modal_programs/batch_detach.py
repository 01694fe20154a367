# Ported from Modal's guide "Batch processing" (modal.com/docs/guide/batch-processing): a
# job fans out over many inputs with .spawn_map and the script ends at once; run detached,
# the work goes on without it. Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run --detach batch_detach.py  (needs a running Jupyter server)

import time

import nbscale as modal

app = modal.App("example-batch-detach")


@app.function(max_containers=2)
def process_chunk(i: int) -> int:
    time.sleep(0.2)
    return sum(range(i * 100, (i + 1) * 100))


@app.local_entrypoint()
def main(chunks: int = 10):
    process_chunk.spawn_map(range(chunks))
    print("submitted", chunks, "chunks")

# Ported from Modal's guide "Queues" (modal.com/docs/guide/queues) and its job-queue
# pattern: the entrypoint puts jobs on a Queue, workers take them until a stop mark and
# put their results on a second partition, which the entrypoint drains.
# Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run queue_jobs.py [--jobs N] [--consumers N]

import nbscale as modal

app = modal.App("example-queue-jobs")


def work(job: int) -> int:
    return sum(i * i for i in range(job))


@app.function(max_containers=3)
def consumer(queue: modal.Queue, worker: int) -> int:
    done = 0
    while True:
        job = queue.get(timeout=60)  # None only if nothing comes for a minute
        if job is None or job == "stop":
            return done
        queue.put((job, work(job)), partition="results")
        done += 1


@app.local_entrypoint()
def main(jobs: int = 40, consumers: int = 3):
    with modal.Queue.ephemeral() as queue:
        calls = [consumer.spawn(queue, w) for w in range(consumers)]
        queue.put_many(list(range(jobs)))
        queue.put_many(["stop"] * consumers)
        handled = sum(call.get(timeout=120) for call in calls)
        results = dict(queue.get_many(jobs, partition="results", timeout=10))
        print("handled", handled)
        print("left", queue.len(partition="results"), queue.len())
        print("results", [results[j] for j in sorted(results)])

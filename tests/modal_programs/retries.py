# Ported from Modal's guide "Failures and retries" (modal.com/docs/guide/retries): a flaky
# function retried with modal.Retries, and failures of a map kept in its results with
# return_exceptions=True, told apart by their exception type. Changed: `import modal` ->
# `import nbscale as modal`.
# Run with: nbscale run retries.py

import nbscale as modal

app = modal.App("example-retries")

attempts: dict[int, int] = {}  # per container: how often each input was tried there


class NotRetryable(Exception):
    """A failure of the caller's making: retrying will not help."""


# Fails twice for each input, then succeeds: the retry policy hides the flakes.
@app.function(
    retries=modal.Retries(max_retries=3, backoff_coefficient=1.0, initial_delay=1.0),
    max_containers=1,
)
def flaky_square(x: int):
    attempts[x] = attempts.get(x, 0) + 1
    if attempts[x] < 3:
        raise ConnectionError(f"flake on input {x}, attempt {attempts[x]}")
    return x * x, attempts[x]


@app.function()
def check(x: int) -> int:
    if x < 0:
        raise ValueError(f"{x} is negative")
    if x > 100:
        raise NotRetryable(f"{x} is too large")
    return x


@app.local_entrypoint()
def main():
    for value, tries in flaky_square.map(range(4)):
        print("flaky", value, "after", tries, "attempts")
    outcomes = list(check.map([1, -2, 300, 4], return_exceptions=True))
    for outcome in outcomes:
        if isinstance(outcome, NotRetryable):
            print("not retryable:", outcome)
        elif isinstance(outcome, ValueError):
            print("bad value:", outcome)
        else:
            print("ok:", outcome)
    try:
        check.remote(-1)
    except ValueError as exc:
        print("caught", type(exc).__name__, exc)

# Ported from Modal's example "Scheduling remote jobs" (modal-labs/modal-examples,
# 05_scheduling/schedule_simple.py): functions run by Modal's scheduler. nbscale has no
# scheduler, so the run stops at the line that asks for one, saying so.
# Changed: `import modal` -> `import nbscale as modal`.
# Run with: nbscale run scheduled_report.py  (fails: exit code 1, one line)

import time
from datetime import datetime

import nbscale as modal

app = modal.App("example-schedule-simple")


@app.function(schedule=modal.Period(seconds=5))
def print_time_1():
    print(f"Printing with period 5 seconds: {datetime.now().strftime('%m/%d/%Y, %H:%M:%S')}")


@app.local_entrypoint()
def main():
    print_time_1.remote()
    time.sleep(1)

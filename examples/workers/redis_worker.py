"""A queue worker: pops jobs from the redis list `jobs` (through redis-cli, so that it needs
nothing but the standard library) and takes 100 ms for each."""

import os
import subprocess
import time

port = os.environ.get("REDIS_PORT", "6390")
name = f"{os.environ['PROCCTL_NAME']}:{os.environ['PROCCTL_INSTANCE']}"
while True:
    job = subprocess.run(["redis-cli", "-p", port, "blpop", "jobs", "1"], capture_output=True, text=True).stdout.split()
    if job:
        time.sleep(0.1)
        print(f"{name} did {job[-1]}", flush=True)

"""A worker that leaks a little with each job, as long-running PHP and Python workers do:
each message on its pipe is a job, and each job keeps 1 MiB it never frees. procctl
recycles it once it stays above max_memory (see examples/leaky.toml)."""

import os
import signal
import sys

kept = []
pipe = os.fdopen(int(os.environ["PROCCTL_PIPE_FD"]), "r")
# On stop, finish the jobs already queued (the agent closes the pipe after them).
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for job in pipe:
    kept.append(b"x" * (1 << 20))
    print(f"{os.environ['PROCCTL_INSTANCE']}: {job.strip()} done, holding {len(kept)} MiB", flush=True)
sys.exit(0)

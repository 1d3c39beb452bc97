"""The queue consumer of queue_consumer.php in Python, plain style: each message is a job and
the returned string its reply; arg is the `arg` table of procctl.toml.

    procctl send --any consumer-py job-1
    procctl send --reply consumer-py:0 job-2
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
from procctl_worker import Worker  # noqa: E402  (or pip install ./clients/python)


class Consumer(Worker):
    def run(self, arg):
        print(f"{self.process_name} run {arg}", flush=True)

    def on_pipe_readable(self, message):
        time.sleep(self.arg.get("work_ms", 0) / 1000)
        return f"done {message} by {self.process_name}:{self.instance}"

    def on_shutdown(self):
        print(f"{self.process_name}:{self.instance} shutdown", flush=True)


Consumer().start()

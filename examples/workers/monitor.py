"""The Swoft monitor loop of monitor.php in Python, asyncio style: run() loops while
messages are served beside it; `await self.wait(ms)` is the sleep that ends at a stop.

    procctl send --reply monitor-py report
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
from procctl_worker import AsyncWorker  # noqa: E402  (or pip install ./clients/python)


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[:2]


class Monitor(AsyncWorker):
    async def run(self, arg):
        self.ready("monitoring")
        every = arg.get("every_ms", 3000)
        while True:
            one, five = load()
            print(f"monitor = load {one} {five}", flush=True)
            self.status(f"load {one}, {five}")
            if not await self.wait(every):
                break

    async def on_pipe_readable(self, message):
        return " ".join(load()) if message == "report" else None


Monitor().start()

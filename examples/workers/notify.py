"""A worker that says when it is ready, the way programs built for systemd's Type=notify
do: it loads for a while (LOAD_SECS, default 1), reports its progress with STATUS=, sends
READY=1, then feeds the watchdog (WATCHDOG=1) at half its interval when one is set.

    [process.api]
    command = ["python3", "workers/notify.py"]
    ready = "notify"
    watchdog = "4s"
"""
import os
import socket
import time


def notify(text):
    """Sends one sd_notify datagram to $NOTIFY_SOCKET ('@' names an abstract socket)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(text.encode(), address)


load = float(os.environ.get("LOAD_SECS", "1"))
for percent in (0, 50):
    notify(f"STATUS=loading {percent}%")
    time.sleep(load / 2)
notify("READY=1\nSTATUS=serving")
print("ready", flush=True)

watchdog = int(os.environ.get("WATCHDOG_USEC", "0")) / 1e6
while True:
    if watchdog and not os.path.exists(os.environ.get("HANG_FILE", "/nonexistent")):
        notify("WATCHDOG=1")
    time.sleep(watchdog / 2 if watchdog else 3600)

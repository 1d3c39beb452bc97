"""Crashes half a second after it starts, to show backoff and the `fatal` state."""
import os
import sys
import time

print(f"crashy: started as pid {os.getpid()}, crashing soon", flush=True)
time.sleep(0.5)
sys.exit(3)

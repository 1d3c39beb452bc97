"""A procctl worker in Python: reads one message per line from its pipe and replies on it.

Try: procctl send --reply NAME:0 ping
"""
import os
import socket

fd = int(os.environ.get("PROCCTL_PIPE_FD", "3"))
name = f'{os.environ.get("PROCCTL_NAME")}:{os.environ.get("PROCCTL_INSTANCE")}'
# The pipe is one end of a Unix socket pair.
pipe = socket.socket(fileno=fd)
messages = pipe.makefile("r", encoding="utf-8", newline="\n")
replies = pipe.makefile("w", encoding="utf-8", newline="\n")
print(f"{name} ready (pid {os.getpid()})", flush=True)

for line in messages:
    message = line.rstrip("\n")
    print(f"{name} got: {message}", flush=True)
    replies.write(f"got {message}\n")
    replies.flush()

#!/usr/bin/env bash
# Reads one message per line from the agent's pipe and answers each on the same fd.
# Try: procctl send echo "hello"   or   procctl send --reply echo:0 ping
name="$PROCCTL_NAME:$PROCCTL_INSTANCE"
echo "$name ready (pid $$)"
while IFS= read -r message <&"$PROCCTL_PIPE_FD"; do
    echo "$name got: $message"
    echo "got $message" >&"$PROCCTL_PIPE_FD"
done

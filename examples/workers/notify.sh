#!/bin/sh
# A shell worker that says when it is ready over sd_notify, with socat:
#   [process.job]
#   command = ["sh", "workers/notify.sh"]
#   ready = "notify"
# $NOTIFY_SOCKET starts with '@': an abstract socket, socat's ABSTRACT-SENDTO.
#
# The agent takes a message only from a process of the instance, which it looks up by the
# sender's pid when it reads the message. A socat per message is reaped by this shell as
# soon as it has sent, often before the agent reads it, and its message is then ignored.
# So one socat sends every message and lives as long as the worker: `work` writes them to
# fd 4, a pipe into it. Each ends with a newline, so two that socat happens to read at once
# still make one valid datagram.
notify() { printf '%s\n' "$1" >&4; }

work() {
    notify "STATUS=warming up"
    sleep "${LOAD_SECS:-1}"
    notify "READY=1
STATUS=up since $(date +%T)"
    echo ready
    exec sleep 100000
}

exec 5>&1
work 4>&1 >&5 5>&- | socat -u - "ABSTRACT-SENDTO:${NOTIFY_SOCKET#@}" 5>&-

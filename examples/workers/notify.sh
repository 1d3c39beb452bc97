#!/bin/sh
# A shell worker that says when it is ready over sd_notify, with socat:
#   [process.job]
#   command = ["sh", "workers/notify.sh"]
#   ready = "notify"
# $NOTIFY_SOCKET starts with '@': an abstract socket, socat's ABSTRACT-SENDTO.
notify() { printf '%s' "$1" | socat -u - "ABSTRACT-SENDTO:${NOTIFY_SOCKET#@}"; }

notify "STATUS=warming up"
sleep "${LOAD_SECS:-1}"
notify "READY=1
STATUS=up since $(date +%T)"
echo ready
exec sleep 100000

#!/bin/sh
# Pushes 300 jobs onto the `jobs` list of examples/queue.toml's redis, then shows the queue
# drain and the worker count follow it.
port=${REDIS_PORT:-6390}
for i in $(seq 300); do echo "RPUSH jobs job-$i"; done | redis-cli -p "$port" > /dev/null
for _ in $(seq 30); do
    echo "jobs: $(redis-cli -p "$port" llen jobs)  workers: $(procctl list queue-worker | tail -n +2 | wc -l)"
    sleep 1
done

#!/usr/bin/env python3
"""Interleaved A/B timing of one procctl command against two (or more) builds.

    python3 bench/ab.py [--n 1000] [--runs 30] [--gap 0.05] [--agent-arg=--no-cgroups] \\
        before=DIR after=DIR -- list --json

Each DIR holds a `procagent` and a `procctl`. Every build gets an agent of its own with --n
`sleep` instances (in cgroups when run as root), all running at once; then the command runs
as a whole process (posix_spawn and waitpid, stdout to /dev/null) against each build in
turn, the order alternating from round to round, --gap seconds apart, after three warm-ups.
Prints the median with the quartiles and the extremes of each, and the agent's CPU per
command (the schedstat run time of all its threads, which counts what sampling costs). A
failing command stops the run. Standard library only.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def agent_cpu_ns(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="instances per agent (100)")
    parser.add_argument("--runs", type=int, default=30, help="rounds (30)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between two commands (0.05)")
    parser.add_argument("--agent-arg", action="append", default=[], help="an extra procagent argument")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="LABEL=DIR ... -- COMMAND ...")
    args = parser.parse_args()
    if "--" not in args.rest:
        parser.error("give LABEL=DIR ... -- COMMAND ...")
    split = args.rest.index("--")
    builds = [spec.split("=", 1) for spec in args.rest[:split]]
    command = args.rest[split + 1 :]
    if not builds or not command or any(len(b) != 2 for b in builds):
        parser.error("give LABEL=DIR ... -- COMMAND ...")

    sleep = shutil.which("sleep")
    tmp = tempfile.mkdtemp(prefix="procctl-ab-")
    agents, procs = {}, []
    try:
        for label, directory in builds:
            ctl = os.path.join(directory, "procctl")
            d = os.path.join(tmp, label)
            os.makedirs(d)
            config = os.path.join(d, "procctl.toml")
            with open(config, "w") as f:
                f.write(
                    f'[process.worker]\ncommand = ["{sleep}", "100000"]\ninstances = {args.n}\n'
                    'restart = "always"\nstart_secs = "0s"\nstop_timeout = "5s"\n'
                )
            sock = os.path.join(d, "run", "agent.sock")
            env = dict(os.environ, PROCCTL_SOCKET=sock, XDG_RUNTIME_DIR=os.path.join(d, "xdg-run"),
                       XDG_STATE_HOME=os.path.join(d, "xdg-state"))
            os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
            argv = [os.path.join(directory, "procagent"), "--config", config, "--socket", sock,
                    "--state-dir", os.path.join(d, "state"), *args.agent_arg]
            with open(os.path.join(d, "agent.log"), "w") as log:
                proc = subprocess.Popen(argv, env=env, cwd=d, stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
            deadline = time.monotonic() + 120
            while True:
                answer = subprocess.run([ctl, "list", "--json"], env=env, capture_output=True)
                if answer.returncode == 0:
                    running = sum(1 for row in json.loads(answer.stdout) if row["state"] == "running")
                    if running == args.n:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit(f"{label}: {args.n} instances not running after 120 s: {answer.stderr[-300:]!r}")
                time.sleep(0.2)
            agents[label] = (ctl, env, proc.pid)

        null = os.open(os.devnull, os.O_WRONLY)

        def once(label):
            ctl, env, _ = agents[label]
            start = time.perf_counter()
            pid = os.posix_spawn(ctl, [ctl, *command], env, file_actions=[(os.POSIX_SPAWN_DUP2, null, 1)])
            _, status = os.waitpid(pid, 0)
            took = time.perf_counter() - start
            if status != 0:
                sys.exit(f"{label}: `procctl {' '.join(command)}` failed ({status})")
            return took

        for label in agents:
            for _ in range(3):
                once(label)
        samples = {label: [] for label in agents}
        cpu = {label: 0 for label in agents}
        labels = list(agents)
        for round_ in range(args.runs):
            for label in labels if round_ % 2 == 0 else labels[::-1]:
                before = agent_cpu_ns(agents[label][2])
                samples[label].append(once(label))
                cpu[label] += agent_cpu_ns(agents[label][2]) - before
                if args.gap:
                    time.sleep(args.gap)
        print(f"`procctl {' '.join(command)}`, {args.n} instances, {args.runs} rounds, {args.gap} s apart")
        for label, s in samples.items():
            s.sort()
            at = lambda q: s[round(q * (len(s) - 1))] * 1000  # noqa: E731
            print(f"{label:>10}: median {statistics.median(s) * 1000:.2f} ms (quartiles {at(0.25):.2f}–{at(0.75):.2f}, "
                  f"{s[0] * 1000:.2f}–{s[-1] * 1000:.2f}); agent CPU {cpu[label] / len(s) / 1e6:.2f} ms per command")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

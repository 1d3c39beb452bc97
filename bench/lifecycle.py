#!/usr/bin/env python3
"""Interleaved A/B of a fleet's life: agent start -> every instance exec'd, and shutdown ->
nothing of the run left, against two (or more) builds.

    python3 bench/lifecycle.py [--n 1000] [--runs 6] [--no-list] [--agent-arg=--no-cgroups] \\
        before=DIR after=DIR

Each DIR holds a `procagent` and a `procctl`. In every round each build in turn (the order
alternating from round to round) starts an agent of its own with --n `sleep` instances (in
cgroups when run as root) and the time to the last instance's exec is taken; after a pause
one `procctl list --json` (so the agent has opened its sample files, as it has once anybody
looked), then `procctl shutdown`, timed until the agent and every process below it are gone
(this script is a child subreaper, so nothing escapes the count). Prints the median, the
quartiles and every run of each.

Exec times come from the kernel's process events (netlink proc connector, which needs
root): one event per exec, read by a thread. Without root the agent's children are polled
in /proc instead, which costs CPU of its own and reads later. Standard library only.
"""
import argparse
import ctypes
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import comm, running_children, wait_until  # noqa: E402

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_EXEC = 0x2
PR_SET_CHILD_SUBREAPER = 36
CHILD = "fleetchild"  # the instances' program: a link to sleep, so its exec is told apart


class Execs:
    """Pids of processes that exec'd a program named CHILD, with the kernel's timestamps."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        self.sock.bind((os.getpid(), CN_IDX_PROC))
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        # nlmsghdr, cn_msg (idx, val, seq, ack, len, flags), then the operation
        op = struct.pack("I", PROC_CN_MCAST_LISTEN)
        cn = struct.pack("IIIIHH", CN_IDX_PROC, 1, 0, 0, len(op), 0) + op
        self.sock.send(struct.pack("IHHII", 16 + len(cn), 3, 0, 0, os.getpid()) + cn)
        self.lock = threading.Condition()
        self.seen = []  # (kernel ns, pid)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length = struct.unpack_from("I", data, offset)[0]
                # nlmsghdr 16 + cn_msg 20, then proc_event: what, cpu, timestamp_ns, data
                what, _cpu, stamp = struct.unpack_from("IIQ", data, offset + 36)
                if what == PROC_EVENT_EXEC:
                    pid = struct.unpack_from("I", data, offset + 52)[0]
                    if comm(pid) == CHILD:
                        with self.lock:
                            self.seen.append((stamp, pid))
                            self.lock.notify_all()
                offset += max(length, 16)

    def mark(self):
        with self.lock:
            return len(self.seen)

    def wait(self, since, count, timeout):
        """The kernel's timestamp of the count-th exec after mark `since` (None on timeout)."""
        end = time.monotonic() + timeout
        with self.lock:
            while len(self.seen) - since < count:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(min(left, 0.1))
            return sorted(stamp for stamp, _ in self.seen[since:])[count - 1]


def poll_up(agent_pid, count, timeout):
    """Without the connector: polls until `count` children of the agent run CHILD."""
    try:
        wait_until(lambda: len(running_children(agent_pid, CHILD)) >= count, timeout, 0.002)
    except TimeoutError:
        return None
    return time.monotonic_ns()


def quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def one_round(label, directory, args, execs, results):
    tmp = tempfile.mkdtemp(prefix="procctl-lifecycle-")
    try:
        os.makedirs(os.path.join(tmp, "bin"))
        child = os.path.join(tmp, "bin", CHILD)
        os.symlink(shutil.which("sleep"), child)
        config = os.path.join(tmp, "procctl.toml")
        with open(config, "w") as f:
            f.write(f'[process.worker]\ncommand = ["{child}", "100000"]\ninstances = {args.n}\n'
                    'restart = "always"\nstart_secs = "0s"\nstop_timeout = "5s"\n')
        sock = os.path.join(tmp, "run", "agent.sock")
        env = dict(os.environ, PROCCTL_SOCKET=sock, XDG_RUNTIME_DIR=tmp, XDG_STATE_HOME=tmp)
        ctl = os.path.join(directory, "procctl")
        since = execs.mark() if execs else 0
        t0 = time.monotonic_ns()
        with open(os.path.join(tmp, "agent.log"), "w") as log:
            agent = subprocess.Popen(
                [os.path.join(directory, "procagent"), "--config", config, "--socket", sock,
                 "--state-dir", os.path.join(tmp, "state"), *args.agent_arg],
                env=env, stdout=subprocess.DEVNULL, stderr=log)
        up = execs.wait(since, args.n, 120) if execs else poll_up(agent.pid, args.n, 120)
        if up is None:
            agent.kill()
            sys.exit(f"{label}: not all {args.n} instances came up within 120 s (see {tmp}/agent.log)")
        results[label]["up"].append((up - t0) / 1e6)
        time.sleep(args.settle)
        if args.list:
            subprocess.run([ctl, "list", "--json"], env=env, stdout=subprocess.DEVNULL, check=True)
            time.sleep(0.5)
        t1 = time.monotonic_ns()
        subprocess.run([ctl, "shutdown"], env=env, stdout=subprocess.DEVNULL, check=True)
        # The agent, then whatever it left (handed to this subreaper), all reaped.
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        results[label]["stop"].append((time.monotonic_ns() - t1) / 1e6)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="instances per agent (1000)")
    parser.add_argument("--runs", type=int, default=6, help="rounds (6)")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds between up and the stop (1.5)")
    parser.add_argument("--no-list", dest="list", action="store_false", help="no `list` before the stop")
    parser.add_argument("--agent-arg", action="append", default=[], help="an extra procagent argument")
    parser.add_argument("builds", nargs="+", help="LABEL=DIR")
    args = parser.parse_args()
    builds = [spec.split("=", 1) for spec in args.builds]
    if any(len(b) != 2 for b in builds):
        parser.error("give LABEL=DIR ...")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        execs = Execs()
    except OSError as e:
        print(f"no process events ({e}): polling /proc, which reads later", file=sys.stderr)
        execs = None
    results = {label: {"up": [], "stop": []} for label, _ in builds}
    for r in range(args.runs):
        for label, directory in builds if r % 2 == 0 else builds[::-1]:
            one_round(label, directory, args, execs, results)
            time.sleep(0.5)
        print(f"round {r + 1}: " + ", ".join(
            f"{label} up {v['up'][-1]:.0f} ms, stop {v['stop'][-1]:.1f} ms" for label, v in results.items()),
            file=sys.stderr, flush=True)
    print(f"{args.n} instances, {args.runs} rounds{' ' + ' '.join(args.agent_arg) if args.agent_arg else ''}")
    for key, what in (("up", "start -> all exec'd"), ("stop", "shutdown -> all gone")):
        print(f"{what} (ms):")
        for label, v in results.items():
            low, high = quartiles(v[key])
            print(f"  {label:>10}  median {statistics.median(v[key]):7.1f}  quartiles {low:.1f}-{high:.1f}  "
                  f"runs {' '.join(f'{x:.0f}' for x in v[key])}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""procctl benchmarks, side by side with supervisord when it is installed.

    python3 bench/bench.py [--quick] [--only NAME[,NAME]] [--json FILE] [--no-build]

Builds the release binaries, runs each scenario against real processes (sleep, sh and
python3 workers), and prints one table: scenario, procctl median (min-max), supervisord
median, ratio. The same figures go to a JSON file (default bench/results.json).
supervisord comes from `pip install supervisor`; without it those columns are empty.
Figures vary from run to run on a shared machine: compare medians and ratios.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(ROOT, "target/release/procagent")
CTL = os.path.join(ROOT, "target/release/procctl")
TICKS = os.sysconf("SC_CLK_TCK")


def find_supervisor():
    scripts = sysconfig.get_path("scripts")
    found = [os.path.join(scripts, n) for n in ("supervisord", "supervisorctl")]
    if all(os.access(p, os.X_OK) for p in found):
        return found
    # Skip shims (pyenv): they add a shell to every call.
    found = [shutil.which(n) for n in ("supervisord", "supervisorctl")]
    return found if all(found) else None


def spawn_wait(argv, env=None, stdin_data=None):
    """Whole-process wall time of one command, with as little harness overhead as possible."""
    if stdin_data is None:
        t0 = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env or os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
        _, status = os.waitpid(pid, 0)
        return time.perf_counter() - t0, os.waitstatus_to_exitcode(status)
    t0 = time.perf_counter()
    r = subprocess.run(argv, input=stdin_data, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0, r.returncode


def wait_until(pred, timeout=60.0, step=0.001):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("condition not met within %ss" % timeout)


def children(pid):
    kids = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def running_children(pid, name):
    return [k for k in children(pid) if comm(k) == name]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def memory(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss / 1024, pss / 1024


class Procctl:
    name = "procctl"

    def __init__(self, tmp, processes):
        self.dir = tmp
        self.sock = os.path.join(tmp, "agent.sock")
        self.env = dict(os.environ, PROCCTL_SOCKET=self.sock)
        cfg = []
        for p in processes:
            cfg.append(textwrap.dedent(f"""
                [process.{p['name']}]
                command = {json.dumps(p['argv'])}
                instances = {p['n']}
                start_secs = "{p.get('start_secs', '0s')}"
                stop_timeout = "5s"
                start_retries = {p.get('start_retries', 1000000)}
                {p.get('extra', '')}
            """))
        self.config = os.path.join(tmp, "procctl.toml")
        with open(self.config, "w") as f:
            f.write("\n".join(cfg))
        self.proc = None

    def start(self):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([AGENT, "--config", self.config, "--socket", self.sock,
                                      "--state-dir", os.path.join(self.dir, "state")],
                                     stderr=subprocess.DEVNULL, env=self.env, start_new_session=True)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def ctl(self, *args, stdin_data=None):
        return spawn_wait([CTL, *args], self.env, stdin_data)

    def list_cmd(self):
        return self.ctl("list")

    def restart_cmd(self, name):
        return self.ctl("restart", f"{name}:0")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            subprocess.run([CTL, "shutdown"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=120)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


class Supervisord:
    name = "supervisord"

    def __init__(self, tmp, processes, binaries):
        self.dir = tmp
        self.daemon, self.client = binaries
        self.sock = os.path.join(tmp, "supervisor.sock")
        cfg = [textwrap.dedent(f"""
            [unix_http_server]
            file={self.sock}
            [supervisord]
            logfile={tmp}/supervisord.log
            pidfile={tmp}/supervisord.pid
            childlogdir={tmp}
            nodaemon=true
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            [supervisorctl]
            serverurl=unix://{self.sock}
        """)]
        for p in processes:
            cfg.append(textwrap.dedent(f"""
                [program:{p['name']}]
                command={' '.join(p['argv']) if p['argv'][0] != 'sh' else 'sh -c "' + p['argv'][2] + '"'}
                numprocs={p['n']}
                process_name=%(program_name)s_%(process_num)d
                startsecs=0
                startretries=1000000
                autorestart=true
                stopwaitsecs=5
                stdout_logfile=NONE
                stderr_logfile=NONE
            """))
        self.config = os.path.join(tmp, "supervisord.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(cfg))
        self.proc = None

    def start(self):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([self.daemon, "-c", self.config], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def ctl(self, *args):
        return spawn_wait([self.client, "-c", self.config, *args])

    def list_cmd(self):
        return self.ctl("status")

    def restart_cmd(self, name):
        return self.ctl("restart", f"{name}:{name}_0")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


SLEEP = ["sleep", "100000"]


def ready(sup, name, n, timeout=120):
    """Waits until `n` children of the supervisor run `name`. Reading /proc costs CPU that the
    supervisor under test would otherwise get, so large counts are checked less often."""
    step = 0.001 if n <= 10 else 0.01
    wait_until(lambda: len(children(sup.pid)) >= n and len(running_children(sup.pid, name)) >= n, timeout, step)


def with_system(make, processes, body):
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    sup = make(tmp, processes).start()
    try:
        return body(sup)
    finally:
        sup.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def s_list(make, runs):
    def body(sup):
        ready(sup, "sleep", 100)
        sup.list_cmd()
        return [sup.list_cmd()[0] * 1000 for _ in range(runs)]
    return with_system(make, [{"name": "w", "argv": SLEEP, "n": 100}], body)


def s_crash(make, runs):
    def body(sup):
        ready(sup, "sleep", 10)
        times = []
        for i in range(runs):
            before = set(running_children(sup.pid, "sleep"))
            victim = sorted(before)[i % len(before)]
            t0 = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: set(running_children(sup.pid, "sleep")) - before, 30, step=0)
            times.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.3)  # let the instance count as started again
        return times
    return with_system(make, [{"name": "w", "argv": SLEEP, "n": 10}], body)


def s_restart(make, runs):
    def body(sup):
        ready(sup, "sleep", 1)
        sup.restart_cmd("w")
        return [sup.restart_cmd("w")[0] * 1000 for _ in range(runs)]
    return with_system(make, [{"name": "w", "argv": SLEEP, "n": 1}], body)


def s_spawn(make, n, runs):
    times = []
    for _ in range(runs):
        def body(sup):
            ready(sup, "sleep", n, timeout=300)
            return (time.perf_counter() - sup.t0) * 1000
        times.append(with_system(make, [{"name": "w", "argv": SLEEP, "n": n}], body))
    return times


def s_scale(make, runs):
    times = []
    for _ in range(runs):
        def body(sup):
            time.sleep(0.2)
            wait_until(lambda: sup.ctl("list")[1] == 0, 30)
            t, rc = sup.ctl("scale", "w", "1000")
            assert rc == 0
            return t * 1000
        times.append(with_system(make, [{"name": "w", "argv": SLEEP, "n": 0}], body))
    return times


def s_footprint(make):
    def body(sup):
        ready(sup, "sleep", 1000, timeout=300)
        time.sleep(1)
        rss, pss = memory(sup.pid)
        t0 = cpu_ticks(sup.pid)
        time.sleep(10)
        return rss, pss, cpu_ticks(sup.pid) - t0
    return with_system(make, [{"name": "w", "argv": SLEEP, "n": 1000}], body)


READER = ["sh", "-c", 'exec cat <&"$PROCCTL_PIPE_FD" > /dev/null']
ECHO = ["python3", os.path.join(ROOT, "examples/workers/echo.py")]


def s_stream(runs, count):
    data = "".join(f"message {i:07d}\n" for i in range(count)).encode()

    def body(sup):
        ready(sup, "cat", 1)
        rates = []
        for _ in range(runs):
            t, rc = sup.ctl("send", "r", "-", stdin_data=data)
            assert rc == 0
            rates.append(count / t)
        return rates
    return with_system(Procctl, [{"name": "r", "argv": READER, "n": 1}], body)


def s_reply(runs):
    def body(sup):
        wait_until(lambda: sup.ctl("send", "--reply", "e", "warm")[1] == 0, 30, step=0.05)
        return [sup.ctl("send", "--reply", "e", "ping")[0] * 1000 for _ in range(runs)]
    return with_system(Procctl, [{"name": "e", "argv": ECHO, "n": 1}], body)


def s_list_under_crashes(make, runs):
    crashy = ["sh", "-c", "exit 1"]

    def body(sup):
        ready(sup, "sleep", 1)
        time.sleep(1)
        return [sup.list_cmd()[0] * 1000 for _ in range(runs)]
    return with_system(make, [{"name": "w", "argv": SLEEP, "n": 1}, {"name": "c", "argv": crashy, "n": 100}], body)


def s_storm():
    """100 instances that exit at once, with backoff up to 5 s: agent CPU until all are fatal."""
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    crashy = {"name": "c", "argv": ["sh", "-c", "exit 1"], "n": 100, "start_secs": "1s", "start_retries": 12}
    sup = Procctl(tmp, [crashy]).start()
    try:
        wait_until(lambda: sup.ctl("list")[1] == 0, 30, step=0.01)
        t0, c0 = time.perf_counter(), cpu_ticks(sup.pid)

        def all_fatal():
            out = subprocess.run([CTL, "list", "--json"], env=sup.env, capture_output=True, text=True).stdout
            return out and all(r["state"] == "fatal" for r in json.loads(out))
        wait_until(all_fatal, 120, step=0.5)
        seconds, ticks = time.perf_counter() - t0, cpu_ticks(sup.pid) - c0
        return seconds, ticks
    finally:
        sup.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs and smaller counts")
    ap.add_argument("--only", help="comma-separated scenario keys")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench/results.json"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    sv = find_supervisor()
    if not sv:
        print("supervisord not found: `pip install supervisor` to compare with it", file=sys.stderr)
    make_sv = (lambda tmp, p: Supervisord(tmp, p, sv)) if sv else None
    q = args.quick
    runs = 5 if q else 21

    scenarios = [
        ("list", "list, 100 instances (ms)", lambda m: s_list(m, runs), True),
        ("crash", "SIGKILL to replacement running (ms)", lambda m: s_crash(m, 5 if q else 12), True),
        ("restart", "restart of one instance, CLI returns (ms)", lambda m: s_restart(m, runs), True),
        ("spawn100", "100 instances up from agent start (ms)", lambda m: s_spawn(m, 100, 2 if q else 5), True),
        ("spawn1000", "1,000 instances up from agent start (ms)", lambda m: s_spawn(m, 1000, 1 if q else 3), True),
        ("scale1000", "scale 0 -> 1,000, CLI returns (ms)", lambda m: s_scale(m, 1 if q else 3), False),
        ("stream", "send - stream into one worker (messages/s)", lambda m: s_stream(3 if q else 5, 50_000 if q else 200_000), False),
        ("reply", "one send --reply, whole process (ms)", lambda m: s_reply(runs), False),
        ("list_crashing", "list while 100 instances crash-loop (ms)", lambda m: s_list_under_crashes(m, runs), True),
        ("footprint", "agent with 1,000 idle instances", None, False),
        ("storm", "crash storm: 100 instances exiting at once until all fatal", None, False),
    ]
    only = set(args.only.split(",")) if args.only else None
    results = {}
    rows = []
    for key, title, run, compare in scenarios:
        if only and key not in only:
            continue
        if key == "storm":
            seconds, ticks = s_storm()
            share = ticks / TICKS / seconds * 100
            results[key] = {"procctl": {"seconds": seconds, "cpu_ticks": ticks, "cpu_percent_of_one_core": share}}
            rows.append(("crash storm, 100 instances, agent CPU until all fatal", f"{ticks} ticks in {seconds:.0f} s ({share:.1f}% of a core)", "", ""))
            continue
        if key == "footprint":
            rss, pss, ticks = s_footprint(Procctl)
            results[key] = {"procctl": {"rss_mib": rss, "pss_mib": pss, "idle_ticks_10s": ticks}}
            theirs = ("", "")
            if make_sv:
                srss, spss, sticks = s_footprint(make_sv)
                results[key]["supervisord"] = {"rss_mib": srss, "pss_mib": spss, "idle_ticks_10s": sticks}
                theirs = (f"{srss:.1f} / {spss:.1f}", str(sticks))
            rows.append(("agent RSS / PSS, 1,000 instances (MiB)", f"{rss:.1f} / {pss:.1f}", theirs[0], ""))
            rows.append(("idle CPU over 10 s, 1,000 instances (ticks)", str(ticks), theirs[1], ""))
            continue
        ours = summary(run(Procctl))
        theirs = summary(run(make_sv)) if (compare and make_sv) else None
        results[key] = {"title": title, "procctl": ours, "supervisord": theirs}
        fmt = (lambda v: f"{v:,.0f}") if key == "stream" else (lambda v: f"{v:.2f}" if v < 100 else f"{v:.0f}")
        cell = f"{fmt(ours['median'])} ({fmt(ours['min'])}-{fmt(ours['max'])})"
        ratio = ""
        if theirs:
            ratio = f"{theirs['median'] / ours['median']:.0f}x"
        rows.append((title, cell, fmt(theirs["median"]) if theirs else "", ratio))
        print(f"  {title}: {cell}", file=sys.stderr)
    width = max(len(r[0]) for r in rows)
    print(f"{'scenario'.ljust(width)}  {'procctl median (min-max)':<30}  {'supervisord':>12}  ratio")
    for title, ours, theirs, ratio in rows:
        print(f"{title.ljust(width)}  {ours:<30}  {theirs:>12}  {ratio}")
    results["machine"] = {"cpus": os.cpu_count(), "kernel": os.uname().release}
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nfigures written to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A long soak of the agent: a fleet of leaking workers recycled by max_memory, with
traffic and crashes, while the agent's own footprint is sampled.

    python3 bench/soak.py [--minutes 60] [--instances 100] [--out FILE] [--agent PATH --ctl PATH]

It starts one procagent (the release build, or --agent/--ctl) in a temp dir with one
process of --instances instances of a leaking Python worker (as examples/workers/leaky.py:
each job on its pipe keeps --leak-kib KiB, default 64, and prints one line),
`max_memory` (--max-memory, default 24MiB) and `recycle_check = "1s"`, then for
--minutes:

- every --send-every seconds, `procctl send --any leaky -` with --jobs jobs, so the workers
  grow and, once over max_memory for two checks, are recycled one at a time;
- every 5 s a `procctl list`, every 30 s a `procctl list --json` (instances running,
  recycles counted there);
- every --crash-every seconds, `procctl signal leaky:K KILL` of a random instance;
- a `procctl events --json` watcher counting `recycled` events (by reason) and exits;
- every --sample seconds, the agent's RSS and PSS (smaps_rollup), open fds, threads and CPU
  ticks, one JSON object per line into --out.

Then `procctl shutdown`, and a look through /proc for any process left running from the
soak's directory. It prints start / end / max RSS, the slope of RSS over the run (least
squares, after the first --warmup minutes, in KiB per hour: the agent's bounded buffers,
each instance's ring of its last 1,000 log lines and the event and log broadcast queues,
fill in the first minutes at the default rates), the recycles, the crashes, and
whether anything was left behind; exit 1 when something was left, the agent died, or its
log has a panic. Every wait has a deadline; the run ends by itself.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = """import os, signal, sys
kib = int(sys.argv[1])
kept = []
pipe = os.fdopen(int(os.environ["PROCCTL_PIPE_FD"]), "r")
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the queued jobs; the agent closes the pipe
for job in pipe:
    kept.append(b"x" * (kib << 10))
    print(f"{os.environ['PROCCTL_INSTANCE']}: {job.strip()} done, holding {len(kept) * kib} KiB", flush=True)
"""
TICKS = os.sysconf("SC_CLK_TCK")


def sample(pid):
    s = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                s["rss_kib"] = int(line.split()[1])
            elif line.startswith("Pss:"):
                s["pss_kib"] = int(line.split()[1])
    s["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                s["threads"] = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    s["cpu_ticks"] = int(fields[11]) + int(fields[12])
    return s


def left_behind(marker, exclude):
    """Pids of live processes whose command line names the soak's directory."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state != "Z":
            found.append((int(entry), cmd.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


def slope_kib_per_hour(points):
    """Least-squares slope of (seconds, kib) points, in KiB per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / sxx * 3600


class Events(threading.Thread):
    def __init__(self, ctl, env):
        super().__init__(daemon=True)
        self.proc = subprocess.Popen([ctl, "events", "--json"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.counts = {}
        self.reasons = {}
        self.lock = threading.Lock()

    def run(self):
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                kind = e.get("event", "?")
                self.counts[kind] = self.counts.get(kind, 0) + 1
                if kind == "recycled":
                    r = e.get("reason", "?")
                    self.reasons[r] = self.reasons.get(r, 0) + 1

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def fleet_totals(ctl, env):
    """Running instances, recycles and restarts summed from `procctl list --json`; None if it failed."""
    rc, text = run_ctl(ctl, env, ["list", "--json"])
    if rc != 0:
        return None
    rows = json.loads(text)
    rows = rows if isinstance(rows, list) else rows.get("instances", [])
    return {"running": sum(r.get("state") == "running" for r in rows),
            "recycles": sum(r.get("recycles", 0) for r in rows),
            "restarts": sum(r.get("restarts", 0) for r in rows)}


def run_ctl(ctl, env, args, stdin_data=None, timeout=60):
    try:
        r = subprocess.run([ctl, *args], env=env, input=stdin_data, capture_output=True, timeout=timeout)
        return r.returncode, r.stdout
    except subprocess.TimeoutExpired:
        return None, b""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--max-memory", default="24MiB")
    ap.add_argument("--leak-kib", type=int, default=64, help="KiB each job keeps")
    ap.add_argument("--jobs", type=int, default=400, help="jobs per send")
    ap.add_argument("--send-every", type=float, default=2.0)
    ap.add_argument("--crash-every", type=float, default=60.0)
    ap.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=20.0, help="minutes left out of the slope")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/soak.jsonl"))
    ap.add_argument("--agent", default=os.path.join(ROOT, "target/release/procagent"))
    ap.add_argument("--ctl", default=os.path.join(ROOT, "target/release/procctl"))
    ap.add_argument("--no-cgroups", action="store_true")
    args = ap.parse_args()
    for b in (args.agent, args.ctl):
        if not os.access(b, os.X_OK):
            ap.error(f"{b}: not an executable (cargo build --release, or --agent/--ctl)")

    tmp = tempfile.mkdtemp(prefix="procctl-soak")
    worker = os.path.join(tmp, "leaky.py")
    with open(worker, "w") as f:
        f.write(WORKER)
    sock = os.path.join(tmp, "agent.sock")
    env = dict(os.environ, PROCCTL_SOCKET=sock)
    config = os.path.join(tmp, "procctl.toml")
    with open(config, "w") as f:
        f.write(f"""[process.leaky]
command = ["python3", "{worker}", "{args.leak_kib}"]
instances = {args.instances}
max_memory = "{args.max_memory}"
recycle_check = "1s"
start_secs = "0s"
stop_timeout = "5s"
""")
    log = open(os.path.join(tmp, "agent.log"), "w")
    agent = subprocess.Popen([args.agent, "--config", config, "--socket", sock, "--state-dir",
                              os.path.join(tmp, "state"), *(["--no-cgroups"] if args.no_cgroups else [])],
                             stderr=log, stdout=log, env=env, start_new_session=True)
    out = open(args.out, "w")
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    rng = random.Random(21)
    failures = []
    samples = []
    sends = sends_failed = crashes = lists = 0
    list_json = {}
    events = None
    interrupted = False
    try:
        deadline = time.monotonic() + 60
        while run_ctl(args.ctl, env, ["wait", "leaky", "--timeout", "1s"])[0] != 0:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent did not bring {args.instances} instances up within 60 s")
            time.sleep(0.2)
        events = Events(args.ctl, env)
        events.start()
        next_sample = next_send = next_list = next_json = time.monotonic()
        next_crash = time.monotonic() + args.crash_every
        job = 0
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        while True:
            now = time.monotonic()
            if agent.poll() is not None:
                failures.append(f"the agent exited ({agent.returncode}) after {(now - t0) / 60:.1f} min")
                break
            if now >= next_sample or now >= end:
                s = sample(agent.pid)
                s["t"] = round(now - t0, 1)
                s["wall"] = time.strftime("%H:%M:%S", time.gmtime())
                with events.lock:
                    s["recycled"] = events.reasons.copy()
                    s["events"] = events.counts.copy()
                s["crashes"] = crashes
                s["sends"] = sends
                s["running"] = list_json.get("running")
                out.write(json.dumps(s) + "\n")
                out.flush()
                samples.append(s)
                print(f"{s['wall']} t={s['t'] / 60:5.1f} min rss={s['rss_kib'] / 1024:.2f} MiB pss={s['pss_kib'] / 1024:.2f} "
                      f"fds={s['fds']} threads={s['threads']} cpu={s['cpu_ticks']} recycled={sum(s['recycled'].values())} "
                      f"crashes={crashes} running={s['running']}", flush=True)
                next_sample += args.sample
            if now >= end:
                break
            if now >= next_send:
                data = "".join(f"job-{job + i}\n" for i in range(args.jobs)).encode()
                job += args.jobs
                rc, _ = run_ctl(args.ctl, env, ["send", "--any", "leaky", "-"], data)
                sends += 1
                sends_failed += rc != 0
                next_send += args.send_every
            if now >= next_list:
                rc, _ = run_ctl(args.ctl, env, ["list"])
                lists += 1
                if rc != 0:
                    failures.append(f"list failed ({rc}) at {(now - t0) / 60:.1f} min")
                next_list += 5
            if now >= next_json:
                list_json = fleet_totals(args.ctl, env) or list_json
                next_json += 30
            if now >= next_crash:
                k = rng.randrange(args.instances)
                if run_ctl(args.ctl, env, ["signal", f"leaky:{k}", "KILL"])[0] == 0:
                    crashes += 1
                next_crash += args.crash_every
            time.sleep(max(0.0, min(next_sample, next_send, next_list, next_json, next_crash, end) - time.monotonic()))
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: stopping early", flush=True)
    finally:
        if events:
            events.stop()
        last_json = fleet_totals(args.ctl, env) or list_json
        if agent.poll() is None:
            run_ctl(args.ctl, env, ["shutdown"], timeout=120)
            try:
                agent.wait(60)
            except subprocess.TimeoutExpired:
                failures.append("the agent did not exit within 60 s of shutdown")
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
        log.close()
        # Give orphans a moment to show: anything still running after 5 s is left behind.
        deadline = time.monotonic() + 5
        left = left_behind(tmp, {os.getpid()})
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = left_behind(tmp, {os.getpid()})
        with open(os.path.join(tmp, "agent.log"), errors="replace") as f:
            agent_log = f.read()
        if "panicked" in agent_log:
            failures.append("the agent log has a panic")
        for pid, cmd in left:
            failures.append(f"left behind: {pid} {cmd}")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        out.close()

    if not samples:
        print("no samples", file=sys.stderr)
        return 1
    rss = [s["rss_kib"] for s in samples]
    warm = [(s["t"], s["rss_kib"]) for s in samples if s["t"] >= args.warmup * 60]
    recycled = samples[-1]["recycled"]
    summary = {
        "minutes": round((samples[-1]["t"]) / 60, 1),
        "instances": args.instances,
        "rss_mib": {"start": rss[0] / 1024, "end": rss[-1] / 1024, "max": max(rss) / 1024,
                    "slope_kib_per_hour_after_warmup": slope_kib_per_hour(warm),
                    "slope_kib_per_hour_all": slope_kib_per_hour([(s["t"], s["rss_kib"]) for s in samples])},
        "pss_mib": {"start": samples[0]["pss_kib"] / 1024, "end": samples[-1]["pss_kib"] / 1024},
        "fds": {"start": samples[0]["fds"], "end": samples[-1]["fds"], "max": max(s["fds"] for s in samples)},
        "threads": {"start": samples[0]["threads"], "end": samples[-1]["threads"]},
        "agent_cpu_percent": (samples[-1]["cpu_ticks"] - samples[0]["cpu_ticks"]) / TICKS
                             / max(1.0, samples[-1]["t"] - samples[0]["t"]) * 100,
        "recycled_events": recycled,
        "list_json_at_end": last_json,
        "crashes": crashes, "sends": sends, "sends_failed": sends_failed, "lists": lists,
        "events": samples[-1]["events"],
        "left_behind": len(left),
        "failures": failures,
        "interrupted": interrupted,
    }
    with open(args.out, "a") as f:
        f.write(json.dumps({"summary": summary}) + "\n")
    r = summary["rss_mib"]
    print(f"\nsoak: {summary['minutes']} min, {args.instances} instances, max_memory {args.max_memory}")
    print(f"agent RSS start {r['start']:.2f} MiB, end {r['end']:.2f}, max {r['max']:.2f}; slope "
          f"{r['slope_kib_per_hour_after_warmup']:+.0f} KiB/h after {args.warmup:g} min ({r['slope_kib_per_hour_all']:+.0f} over all)")
    print(f"PSS {summary['pss_mib']['start']:.2f} -> {summary['pss_mib']['end']:.2f} MiB; fds {summary['fds']['start']} -> "
          f"{summary['fds']['end']} (max {summary['fds']['max']}); threads {summary['threads']['start']} -> {summary['threads']['end']}; "
          f"agent CPU {summary['agent_cpu_percent']:.2f}% of a core")
    print(f"recycled events {recycled}; list --json at the end {last_json}; crashes {crashes}; "
          f"sends {sends} ({sends_failed} failed); lists {lists}")
    print(f"left behind after shutdown: {len(left)}")
    for f_ in failures:
        print("FAIL:", f_)
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""procctl benchmarks, side by side with supervisord when it is installed.

    python3 bench/bench.py [--quick] [--only NAME[,NAME]] [--json FILE] [--no-build] [--bin DIR]
                           [--no-supervisord]

Builds the release binaries, runs each scenario against real processes (sleep, sh and
python3 workers), and prints one table: scenario, procctl median (min-max), supervisord
median, ratio. The same figures go to a JSON file (default bench/results.json).
supervisord comes from `pip install supervisor`; without it those columns are empty.
Figures vary from run to run on a shared machine: compare medians and ratios.
"""
import argparse
import datetime
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
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

    def __init__(self, tmp, processes, agent_args=()):
        self.dir = tmp
        self.agent_args = list(agent_args)
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
                                      "--state-dir", os.path.join(self.dir, "state"), *self.agent_args],
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
        times = []
        for _ in range(runs):
            t, rc = sup.list_cmd()
            if rc != 0:
                raise RuntimeError(f"{sup.name} list exited {rc}")
            times.append(t * 1000)
        return times
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


def tracking(sup):
    """How the supervisor's children are tracked: the cgroup v2 path of one of them."""
    for kid in children(sup.pid):
        try:
            with open(f"/proc/{kid}/cgroup") as f:
                for line in f:
                    if line.startswith("0::"):
                        path = line[3:].strip()
                        return "cgroup" if "/procctl-" in path else "process groups"
        except OSError:
            continue
    return "unknown"


def s_spawn(make, n, runs, notes=None):
    times = []
    for _ in range(runs):
        def body(sup):
            ready(sup, "sleep", n, timeout=300)
            elapsed = (time.perf_counter() - sup.t0) * 1000
            if notes is not None:
                notes["tracking"] = tracking(sup)
            return elapsed
        times.append(with_system(make, [{"name": "w", "argv": SLEEP, "n": n}], body))
    return (times, notes) if notes is not None else times


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
        return rss, pss, cpu_ticks(sup.pid) - t0, tracking(sup)
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


def s_reply(runs, argv=ECHO, extra=""):
    def body(sup):
        wait_until(lambda: sup.ctl("send", "--reply", "e", "warm")[1] == 0, 30, step=0.05)
        return [sup.ctl("send", "--reply", "e", "ping")[0] * 1000 for _ in range(runs)]
    return with_system(Procctl, [{"name": "e", "argv": argv, "n": 1, "extra": extra}], body)


# Echo workers on the worker libraries (clients/php, clients/python): the reply is the
# return value of onPipeReadable / on_pipe_readable.
LIBRARY_ECHO = {
    "php": ["php", "-r", "require getenv('LIB') . '/php/autoload.php';"
            " (new class extends Procctl\\AbstractProcess {"
            " protected function run($arg) {}"
            " protected function onPipeReadable(string $m) { return \"got $m\"; } })->start();"],
    "py": ["python3", "-c", "from procctl_worker import Worker\n"
           "class E(Worker):\n    def on_pipe_readable(self, m):\n        return 'got ' + m\n"
           "E().start()\n"],
    "pya": ["python3", "-c", "from procctl_worker import AsyncWorker\n"
            "class E(AsyncWorker):\n    async def on_pipe_readable(self, m):\n        return 'got ' + m\n"
            "E().start()\n"],
}


def s_reply_library(runs, kind):
    lib = os.path.join(ROOT, "clients")
    env = f'env = {{ LIB = {json.dumps(lib)}, PYTHONPATH = {json.dumps(os.path.join(lib, "python"))} }}'
    return s_reply(runs, LIBRARY_ECHO[kind], env)


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


# The worker of `ready_event` and `wait_latency`: a `ready = "notify"` instance that blocks
# opening a FIFO until the bench writes a token to it, takes CLOCK_REALTIME right before its
# sendto of READY=1, then writes the stamp to STAMPS/TOKEN (renamed into place, so the bench
# never reads half a file).
NOTIFY_WORKER = r"""
import os, socket, sys, time
fifo, stamps = sys.argv[1], sys.argv[2]
address = os.environ["NOTIFY_SOCKET"]
if address.startswith("@"):
    address = "\0" + address[1:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
with open(fifo, "rb") as f:
    token = f.readline().strip().decode()
t = time.time_ns()
sock.sendto(b"READY=1", address)
part = os.path.join(stamps, "." + token)
with open(part, "w") as f:
    f.write(str(t))
os.rename(part, os.path.join(stamps, token))
while True:
    time.sleep(3600)
"""


class Watcher:
    """A `procctl events --json` process; each line is stamped with time.time_ns() when the
    read that brought it returns."""

    def __init__(self, sup):
        self.proc = subprocess.Popen([CTL, "events", "--json"], env=sup.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.lines = []

    def feed(self, stamp):
        data = os.read(self.fd, 65536)
        if not data:
            raise EOFError("procctl events ended")
        self.buf += data
        *complete, self.buf = self.buf.split(b"\n")
        self.lines += [(stamp, json.loads(line)) for line in complete if line.strip()]

    def take(self, pred):
        for i, (stamp, event) in enumerate(self.lines):
            if pred(event):
                del self.lines[:i + 1]
                return stamp, event
        return None

    def next(self, pred, timeout):
        end = time.monotonic() + timeout
        while True:
            found = self.take(pred)
            if found:
                return found
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching event within %ss" % timeout)
            readable, _, _ = select.select([self.fd], [], [], left)
            if readable:
                self.feed(time.time_ns())

    def sync(self, sup):
        """Returns once the watcher is known to be subscribed: it has seen a `scaled` event of
        the `mark` process, caused here (mark is scaled between 0 and 1 until one shows)."""
        for i in range(20):
            subprocess.run([CTL, "scale", "mark", str((i + 1) % 2)], env=sup.env, stdout=subprocess.DEVNULL,
                           check=True, timeout=30)
            try:
                self.next(lambda e: e.get("event") == "scaled" and e.get("name") == "mark", 1.0)
                return
            except TimeoutError:
                continue
        raise TimeoutError("procctl events never showed an event")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()


def spawn_quiet(argv, env):
    return os.posix_spawn(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])


def reap(pid, timeout):
    """waitpid with a timeout; SIGKILL at the timeout. Returns the exit code (None if killed)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def blocked_reading(pid):
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().strip() == "unix_stream_read_generic"
    except OSError:
        return False


def s_notify(runs, with_wait):
    """ready_event (with_wait False): READY=1 sendto -> `started` at a watcher, in ms.
    wait_latency (with_wait True): `started` at a watcher -> exit of a `procctl wait n`
    spawned before the trigger, in ms; also READY=1 -> that exit."""
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    fifo, stamps, script = os.path.join(tmp, "trigger"), os.path.join(tmp, "stamps"), os.path.join(tmp, "notify.py")
    os.mkfifo(fifo)
    os.mkdir(stamps)
    with open(script, "w") as f:
        f.write(NOTIFY_WORKER)
    worker = {"name": "n", "argv": [sys.executable, script, fifo, stamps], "n": 1, "extra": 'ready = "notify"'}
    mark = {"name": "mark", "argv": SLEEP, "n": 0}
    sup = Procctl(tmp, [worker, mark]).start()
    watcher = restart = waiter = None
    event_ms, exit_ms, ready_to_exit_ms = [], [], []
    try:
        wait_until(lambda: sup.ctl("list")[1] == 0, 30, step=0.01)
        watcher = Watcher(sup)
        watcher.sync(sup)
        for run in range(runs + 1):  # the first, the autostart, is a warm-up
            if run:
                restart = subprocess.Popen([CTL, "restart", "n:0"], env=sup.env, stdout=subprocess.DEVNULL)

            def writer():  # the new worker waits in open(): a non-blocking open for writing succeeds
                try:
                    return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    return None
            fd = wait_until(writer, 30)
            if with_wait:
                waiter = spawn_quiet([CTL, "wait", "n", "--timeout", "60s"], sup.env)
                pidfd = os.pidfd_open(waiter)
                # Blocked reading, and still after 20 ms: its hello was answered (that takes
                # microseconds) and the agent has its request.
                wait_until(lambda: blocked_reading(waiter), 10)
                time.sleep(0.02)
                wait_until(lambda: blocked_reading(waiter), 10)
            token = f"run{run}"
            os.write(fd, (token + "\n").encode())
            os.close(fd)
            is_started = lambda e: e.get("event") == "started" and e.get("name") == "n"
            if not with_wait:
                arrived, _ = watcher.next(is_started, 30)
            else:
                arrived = exited = None
                end = time.monotonic() + 30
                while arrived is None or exited is None:
                    if arrived is None:
                        found = watcher.take(is_started)
                        if found:
                            arrived = found[0]
                            continue
                    left = end - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("no started event or no exit of procctl wait within 30 s")
                    fds = ([watcher.fd] if arrived is None else []) + ([pidfd] if exited is None else [])
                    readable, _, _ = select.select(fds, [], [], left)
                    now = time.time_ns()
                    if pidfd in readable:
                        exited = now
                    if watcher.fd in readable:
                        watcher.feed(now)
                os.close(pidfd)
                code, waiter = reap(waiter, 10), None
                if code != 0:
                    raise RuntimeError(f"procctl wait n exited {code}")
            sent = int(wait_until(lambda: open(os.path.join(stamps, token)).read()
                                  if os.path.exists(os.path.join(stamps, token)) else None, 30))
            if restart:
                if restart.wait(30) != 0:
                    raise RuntimeError("procctl restart n:0 failed")
                restart = None
            if run:
                event_ms.append((arrived - sent) / 1e6)
                if with_wait:
                    exit_ms.append((exited - arrived) / 1e6)
                    ready_to_exit_ms.append((exited - sent) / 1e6)
    finally:
        if waiter:
            reap(waiter, 0)
        if restart and restart.poll() is None:
            restart.kill()
            restart.wait(10)
        if watcher:
            watcher.close()
        sup.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if with_wait:
        return exit_ms, {"ready_to_started_ms": summary(event_ms), "ready_to_wait_exit_ms": summary(ready_to_exit_ms)}
    return event_ms


def listen_loopback():
    """A TCP listener on 127.0.0.1 on a port below 32768 (outside Linux's default ephemeral
    range, so no probe's own source port can take it)."""
    base = 20000 + os.getpid() % 10000
    for port in list(range(base, 32768)) + list(range(10000, base)):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind(("127.0.0.1", port))
        except OSError:
            srv.close()
            continue
        srv.listen(1024)
        return srv, port
    raise RuntimeError("no free loopback port below 32768")


def s_health_cpu(n=100, seconds=10):
    """n `sleep` instances, each with a 1 s tcp health check against one listener of the
    bench's (accept, close): agent CPU ticks over `seconds` once every check has passed."""
    srv, port = listen_loopback()
    accepted = [0]
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            readable, _, _ = select.select([srv], [], [], 0.2)
            if readable:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    continue
                conn.close()
                accepted[0] += 1
    server = threading.Thread(target=serve, daemon=True)
    server.start()
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    health = f'health = {{ tcp = "127.0.0.1:{port}", every = "1s" }}'
    sup = Procctl(tmp, [{"name": "h", "argv": SLEEP, "n": n, "extra": health}]).start()
    try:
        ready(sup, "sleep", n)

        def all_ok():
            out = subprocess.run([CTL, "list", "--json"], env=sup.env, capture_output=True, text=True,
                                 timeout=30).stdout
            return out and len(json.loads(out)) == n and all(r["health"] == "ok" for r in json.loads(out))
        wait_until(all_ok, 60, step=0.5)
        time.sleep(1)
        a0, c0, t0 = accepted[0], cpu_ticks(sup.pid), time.perf_counter()
        time.sleep(seconds)
        ticks, elapsed, checks = cpu_ticks(sup.pid) - c0, time.perf_counter() - t0, accepted[0] - a0
        return {"instances": n, "seconds": elapsed, "cpu_ticks": ticks, "ticks_per_s": ticks / elapsed,
                "cpu_percent_of_one_core": ticks / TICKS / elapsed * 100, "checks": checks,
                "checks_per_s": checks / elapsed, "port": port}
    finally:
        sup.stop()
        stop.set()
        server.join(5)
        srv.close()
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_ns(pid):
    """CPU time of every thread of `pid`, in nanoseconds (schedstat: finer than ticks)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass
    return total


def s_recycle_cpu(n=100, seconds=10):
    """n `sleep` instances with max_memory (never crossed) sampled every second: the agent's
    CPU per check of all n, against the same agent with no policy."""
    out = {}
    for label, extra in (("max_memory", 'max_memory = "1GiB"\nrecycle_check = "1s"'), ("none", "")):
        tmp = tempfile.mkdtemp(prefix="procctl-bench")
        sup = Procctl(tmp, [{"name": "m", "argv": SLEEP, "n": n, "extra": extra}]).start()
        try:
            ready(sup, "sleep", n)
            time.sleep(2)
            c0, t0 = cpu_ns(sup.pid), time.perf_counter()
            time.sleep(seconds)
            used, elapsed = cpu_ns(sup.pid) - c0, time.perf_counter() - t0
            out[label] = {"cpu_ms": used / 1e6, "seconds": elapsed}
        finally:
            sup.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    checks = out["max_memory"]["seconds"]
    out["ms_per_check"] = (out["max_memory"]["cpu_ms"] - out["none"]["cpu_ms"]) / checks
    out["instances"] = n
    return out


def s_autoscale(runs):
    """A process autoscaled from a file (`cat` as the probe, every 100 ms): the number goes
    from 1 to 2 and back, `runs` times. The figure is the agent's own: from its `scaled`
    event (the decision, made as the probe's output is read) to the `started` event of the
    new instance, from the event stream's timestamps (ms)."""
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    number = os.path.join(tmp, "number")
    with open(number, "w") as f:
        f.write("1\n")
    policy = (f'[process.w.autoscale]\nmin = 1\nmax = 2\nper_instance = 1\nevery = "100ms"\n'
              f'down_after = "0s"\nprobe = ["cat", "{number}"]')
    sup = Procctl(tmp, [{"name": "w", "argv": SLEEP, "n": 1, "extra": ""}])
    with open(sup.config) as f:
        text = f.read().replace("instances = 1\n", "")
    with open(sup.config, "w") as f:
        f.write(text + "\n" + policy + "\n")
    sup.start()
    times = []
    try:
        ready(sup, "sleep", 1)
        events = subprocess.Popen([CTL, "events", "--json"], env=sup.env, stdout=subprocess.PIPE, text=True)
        stamp = lambda e: datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() * 1000
        try:
            time.sleep(0.3)
            for _ in range(runs):
                with open(number, "w") as f:
                    f.write("2\n")
                decided = None
                for line in events.stdout:
                    e = json.loads(line)
                    if e["event"] == "scaled" and e.get("to") == 2:
                        decided = stamp(e)
                    elif e["event"] == "started" and e.get("instance") == 1 and decided is not None:
                        times.append(stamp(e) - decided)
                        break
                with open(number, "w") as f:
                    f.write("1\n")
                for line in events.stdout:
                    e = json.loads(line)
                    if e["event"] == "stopped" and e.get("instance") == 1:
                        break
        finally:
            events.kill()
            events.wait()
    finally:
        sup.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return times


def s_idle_cpu(n=1000, seconds=30):
    """n `sleep` instances and no policy: the agent's CPU over `seconds` once they all run
    (ticks from /proc/PID/stat, and the finer schedstat of its threads)."""
    def body(sup):
        ready(sup, "sleep", n, timeout=300)
        time.sleep(2)
        t0, n0 = cpu_ticks(sup.pid), cpu_ns(sup.pid)
        time.sleep(seconds)
        return {"ticks": cpu_ticks(sup.pid) - t0, "cpu_ms": (cpu_ns(sup.pid) - n0) / 1e6, "seconds": seconds,
                "instances": n}
    return with_system(Procctl, [{"name": "w", "argv": SLEEP, "n": n}], body)


class Sshd:
    """OpenSSH's sshd on a loopback port, with a host key and a user key made in `tmp`, and
    an ssh config that reaches it; PATH on the far side starts with the procctl under test,
    and HOME there is an empty directory, so the user's shell start-up files are not timed."""

    def __init__(self, tmp, port):
        self.dir, self.port = tmp, port
        path = lambda name: os.path.join(tmp, name)
        for key in ("host_key", "id"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path(key)], check=True)
        shutil.copy(path("id.pub"), path("authorized_keys"))
        # An empty HOME on the far side: its shell reads no start-up files of the user's.
        os.makedirs(path("home"))
        os.makedirs("/run/sshd", exist_ok=True)
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        with open(path("sshd_config"), "w") as f:
            f.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {path('host_key')}\n"
                    f"AuthorizedKeysFile {path('authorized_keys')}\nPidFile none\nStrictModes no\nUsePAM no\n"
                    f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                    f"AllowUsers {user}\nSetEnv PATH={os.path.dirname(CTL)}:/usr/bin:/bin HOME={path('home')}\n"
                    f"LogLevel ERROR\n")
        with open(path("host_key.pub")) as f:
            host_key = f.read()
        with open(path("known_hosts"), "w") as f:
            f.write(f"[127.0.0.1]:{port} {host_key}")
        self.config = path("ssh_config")
        with open(self.config, "w") as f:
            f.write(f"Host *\n  User {user}\n  IdentityFile {path('id')}\n  IdentitiesOnly yes\n"
                    f"  UserKnownHostsFile {path('known_hosts')}\n  GlobalKnownHostsFile /dev/null\n"
                    f"  StrictHostKeyChecking yes\n  LogLevel ERROR\n")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", path("sshd_config")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(path("sshd.log"), "w"))

        def accepts():
            if self.proc.poll() is not None:
                raise RuntimeError("sshd ended: " + open(path("sshd.log")).read())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(accepts, 30, step=0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def s_ssh_list(runs, port=24680):
    """Whole-process `procctl list` (10 `sleep` instances): local, through `--host ssh://`
    (a new ssh connection each time), and through ssh reusing one ControlMaster connection
    (ControlMaster=auto, ControlPath, ControlPersist). Beside each, `ssh HOST true` the same
    way: ssh's own cost, the far side's login shell included (which reads the user's shell
    start-up files). Interleaved, one of each per round."""
    if not os.access("/usr/sbin/sshd", os.X_OK) or not shutil.which("ssh"):
        raise RuntimeError("sshd or ssh missing: apt-get install openssh-server openssh-client")
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    sshd = Sshd(tmp, port)
    sup = Procctl(tmp, [{"name": "w", "argv": SLEEP, "n": 10}]).start()
    control = os.path.join(tmp, "cm-%r@%h:%p")
    url = f"ssh://127.0.0.1:{port}{sup.sock}"
    remote = [CTL, "--host", url, "list"]
    # No local agent: the remote commands must go through ssh.
    env_plain = dict(os.environ, PROCCTL_SOCKET=os.path.join(tmp, "none.sock"), PROCCTL_SSH=f"ssh -F {sshd.config}")
    env_cm = dict(env_plain, PROCCTL_SSH=f"ssh -F {sshd.config} -o ControlMaster=auto -o ControlPath={control} "
                  f"-o ControlPersist=60")
    env_plain.pop("PROCCTL_HOST", None)
    env_cm.pop("PROCCTL_HOST", None)
    true = lambda env: [shutil.which("ssh"), *env["PROCCTL_SSH"].split()[1:], "-p", str(port), "127.0.0.1", "true"]
    out = {"local": [], "ssh": [], "ssh_true": [], "ssh_controlmaster": [], "ssh_controlmaster_true": []}
    try:
        ready(sup, "sleep", 10)
        for env in (env_plain, env_cm):  # warm-up; the second opens the master connection
            r = subprocess.run(remote, env=env, capture_output=True, text=True, timeout=60)
            if r.returncode != 0 or r.stdout.count("running") != 10:
                raise RuntimeError(f"list through ssh: {r.returncode} {r.stdout} {r.stderr}")
        sup.list_cmd()
        for _ in range(runs):
            rounds = (("local", sup.list_cmd), ("ssh", lambda: spawn_wait(remote, env_plain)),
                      ("ssh_true", lambda: spawn_wait(true(env_plain), env_plain)),
                      ("ssh_controlmaster", lambda: spawn_wait(remote, env_cm)),
                      ("ssh_controlmaster_true", lambda: spawn_wait(true(env_cm), env_cm)))
            for key, timed in rounds:
                t, rc = timed()
                assert rc == 0, key
                out[key].append(t * 1000)
    finally:
        subprocess.run(["ssh", "-F", sshd.config, "-o", f"ControlPath={control}", "-O", "exit", "-p", str(port),
                        "127.0.0.1"], capture_output=True, timeout=30)
        sup.stop()
        sshd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def first_frame_ms(env, rows=40, cols=120, timeout=30):
    """Wall time from spawning `procctl top` on a pseudo-terminal to the first frame with a
    row of the fleet on it (the header and a `running` row read back from the terminal)."""
    import fcntl
    import pty
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    t0 = time.perf_counter()
    proc = subprocess.Popen([CTL, "top"], env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                seen += chunk
                if b"NAME" in seen and b"running" in seen:
                    return (time.perf_counter() - t0) * 1000
            if proc.poll() is not None:
                break
        raise RuntimeError(f"no first frame from procctl top: {seen[-500:]!r}")
    finally:
        if proc.poll() is None:
            os.write(master, b"q")
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        os.close(master)


# Instances crash-looping under `procctl top` (the load: a hundred).
TOP_CRASHING = 100


def s_top(runs, n=TOP_CRASHING, seconds=30):
    """`procctl top` while `n` instances crash-loop (each runs 100 ms and exits 1, restarted
    at once): its time to first frame on a pseudo-terminal (median of `runs`), then its CPU
    ticks over `seconds` in a tmux session of 120x40, with the crashes counted from the
    agent's events over the same seconds, and the agent's own CPU."""
    if not shutil.which("tmux"):
        raise RuntimeError("tmux missing: apt-get install tmux")
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    crashy = {"name": "c", "argv": ["sh", "-c", "sleep 0.1; exit 1"], "n": n, "start_secs": "0s"}
    sup = Procctl(tmp, [{"name": "w", "argv": SLEEP, "n": 1}, crashy]).start()
    env = dict(sup.env, TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    session = f"procctl-bench-{os.getpid()}"
    tmux = ["tmux", "-L", session, "-f", "/dev/null"]
    out = {}
    try:
        ready(sup, "sleep", 1)
        time.sleep(1)
        out["first_frame_ms"] = [first_frame_ms(env) for _ in range(runs)]
        subprocess.run([*tmux, "new-session", "-d", "-s", "b", "-x", "120", "-y", "40",
                        f"exec env PROCCTL_SOCKET={sup.sock} {CTL} top"], env=env, check=True)
        pane = int(subprocess.run([*tmux, "display", "-p", "-t", "b", "#{pane_pid}"], capture_output=True,
                                  text=True, check=True).stdout)
        wait_until(lambda: comm(pane) == "procctl", 30, step=0.05)
        top_pid = pane
        wait_until(lambda: "running" in subprocess.run([*tmux, "capture-pane", "-p", "-t", "b"], capture_output=True,
                                                       text=True).stdout, 30, step=0.05)
        time.sleep(2)
        events = subprocess.Popen([CTL, "events", "--json"], env=sup.env, stdout=subprocess.PIPE, text=True)
        exits = [0]

        def count():
            for line in events.stdout:
                if '"exited"' in line:
                    exits[0] += 1
        reader = threading.Thread(target=count, daemon=True)
        reader.start()
        time.sleep(0.2)
        c0, a0, t0 = cpu_ticks(top_pid), cpu_ticks(sup.pid), time.perf_counter()
        time.sleep(seconds)
        c1, a1, t1 = cpu_ticks(top_pid), cpu_ticks(sup.pid), time.perf_counter()
        events.kill()
        events.wait()
        reader.join(10)
        screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True).stdout
        out.update({"top_ticks": c1 - c0, "agent_ticks": a1 - a0, "seconds": t1 - t0, "exits": exits[0],
                    "screen_has_backoff_or_starting": any(w in screen for w in ("backoff", "starting", "exited"))})
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
        sup.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def socket_fds(pid):
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def s_hangup(runs, clients=2000, batch=200):
    """`clients` procctl send --reply --timeout 1h to a worker that never answers, in batches
    killed once the worker has every message of theirs; then `list` latency, and the socket
    fds the agent still holds."""
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    received = os.path.join(tmp, "received")
    worker = {"name": "h", "argv": ["sh", "-c", f'exec cat <&"$PROCCTL_PIPE_FD" >> {received}'], "n": 1}
    sup = Procctl(tmp, [worker]).start()
    pids = []

    def lines():
        try:
            with open(received, "rb") as f:
                return f.read().count(b"\n")
        except OSError:
            return 0
    try:
        ready(sup, "cat", 1)
        wait_until(lambda: sup.ctl("list")[1] == 0, 30, step=0.01)
        sup.ctl("list")
        idle_list = [sup.ctl("list")[0] * 1000 for _ in range(runs)]
        idle_fds = socket_fds(sup.pid)
        exited_early, timed_out = 0, 0
        for start in range(0, clients, batch):
            pids = [spawn_quiet([CTL, "send", "--reply", "--timeout", "1h", "h", f"m{i:05d}"], sup.env)
                    for i in range(start, min(start + batch, clients))]
            target = min(start + batch, clients)
            try:
                wait_until(lambda: lines() >= target, 60, step=0.005)
            except TimeoutError:
                timed_out += 1
            peak_fds = socket_fds(sup.pid)
            for pid in pids:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    exited_early += 1
                else:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            pids = []
        after_kill_fds = socket_fds(sup.pid)
        after_list = [sup.ctl("list")[0] * 1000 for _ in range(runs)]
        after_list_fds = socket_fds(sup.pid)
        extra = {"clients": clients, "batch": batch, "delivered": lines(), "exited_before_kill": exited_early,
                 "batches_not_fully_delivered": timed_out, "list_idle_ms": summary(idle_list),
                 "socket_fds": {"idle": idle_fds, "last_batch_connected": peak_fds,
                                "right_after_last_kill": after_kill_fds, "after_list_runs": after_list_fds}}
        return after_list, extra
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        sup.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def http_get(port, path="/metrics"):
    """One GET over a fresh connection, as a scraper without keep-alive does; the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"scrape answered {head[:40]!r}")
    return body


def s_metrics(runs, n=1000, idle_seconds=10):
    """One scrape of GET /metrics with `n` instances (wall time in the bench, agent CPU over
    all runs), beside `procctl list --json` of the same fleet; then the agent's idle CPU with
    the endpoint open and nobody scraping."""
    srv, port = listen_loopback()
    srv.close()
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    sup = Procctl(tmp, [{"name": "w", "argv": SLEEP, "n": n}], agent_args=["--metrics", f"127.0.0.1:{port}"]).start()
    try:
        ready(sup, "sleep", n, timeout=300)
        wait_until(lambda: b'state="running"} 1' in http_get(port) and
                   http_get(port).count(b'state="running"} 1') == n, 120, step=0.5)
        size = len(http_get(port))
        scrape_ms = []
        c0 = cpu_ticks(sup.pid)
        for _ in range(runs):
            t0 = time.perf_counter()
            http_get(port)
            scrape_ms.append((time.perf_counter() - t0) * 1000)
        scrape_cpu_ms = (cpu_ticks(sup.pid) - c0) / TICKS * 1000 / runs
        list_ms = []
        c0 = cpu_ticks(sup.pid)
        for _ in range(runs):
            t, rc = sup.ctl("list", "--json")
            if rc != 0:
                raise RuntimeError(f"list exited {rc}")
            list_ms.append(t * 1000)
        list_cpu_ms = (cpu_ticks(sup.pid) - c0) / TICKS * 1000 / runs
        time.sleep(1)
        c0 = cpu_ticks(sup.pid)
        time.sleep(idle_seconds)
        idle_ticks = cpu_ticks(sup.pid) - c0
        extra = {"instances": n, "bytes": size, "agent_cpu_ms_per_scrape": scrape_cpu_ms,
                 "list_json_ms": summary(list_ms), "agent_cpu_ms_per_list_json": list_cpu_ms,
                 "idle_seconds": idle_seconds, "idle_ticks_endpoint_open": idle_ticks}
        return scrape_ms, extra
    finally:
        sup.stop()
        shutil.rmtree(tmp, ignore_errors=True)


GUNICORN_APP = "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'ok\\n']\n"


class HttpLoad:
    """A steady load of `clients` threads, each sending one HTTP/1.0 GET after another to the
    next of `ports` (a new connection each): every failed connection and non-2xx counts, and
    every answer's latency is kept with the phase it fell in."""

    def __init__(self, ports, clients=4):
        import threading
        self.ports, self.phase, self.stop = ports, "before", False
        self.lock = threading.Lock()
        self.latency = {}
        self.failed = {}
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]
        for t in self.threads:
            t.start()

    def client(self, i):
        import socket
        n = i
        while not self.stop:
            port = self.ports[n % len(self.ports)]
            n += 1
            phase = self.phase
            t0 = time.perf_counter()
            ok = False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    ok = data.startswith(b"HTTP/1.0 2") or data.startswith(b"HTTP/1.1 2")
            except OSError:
                ok = False
            elapsed = (time.perf_counter() - t0) * 1000
            with self.lock:
                if ok:
                    self.latency.setdefault(phase, []).append(elapsed)
                else:
                    self.failed[phase] = self.failed.get(phase, 0) + 1
                    # A refused connection comes back at once: do not spin on it.
            if not ok:
                time.sleep(0.001)

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()

    def figures(self, phase):
        values = sorted(self.latency.get(phase, []))
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
        return {"served": len(values), "failed": self.failed.get(phase, 0), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


def s_zero_downtime(seconds):
    """4 gunicorn instances behind `listen` under a steady load: before, then during a rolling
    restart, a reload that changes the command, and `procctl upgrade` of the agent; then the
    same rolling restart with each instance binding a port of its own (no `listen`)."""
    results = {}
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    with open(os.path.join(tmp, "app.py"), "w") as f:
        f.write(GUNICORN_APP)
    gunicorn = [sys.executable, "-m", "gunicorn", "--chdir", tmp, "-w", "1", "--graceful-timeout", "5"]
    port = 23500
    web = {"name": "web", "argv": gunicorn + ["app:app"], "n": 4,
           "extra": f'listen = ["tcp://127.0.0.1:{port}"]\nready = {{ log = "Booting worker" }}'}
    sup = Procctl(tmp, [web]).start()
    try:
        wait_until(lambda: sup.ctl("wait", "web", "--timeout", "1s")[1] == 0, 60, 0.1)
        load = HttpLoad([port])
        time.sleep(seconds)
        load.phase = "restart"
        sup.ctl("restart", "web")
        load.phase = "between"
        time.sleep(1)
        with open(sup.config) as f:
            text = f.read()
        with open(sup.config, "w") as f:
            f.write(text.replace('"app:app"', '"--timeout", "31", "app:app"'))
        load.phase = "reload"
        sup.ctl("reload")
        load.phase = "between_upgrade"
        time.sleep(1)
        load.phase = "upgrade"
        upgrade_s, rc = sup.ctl("upgrade")[:2]
        if rc != 0:
            raise RuntimeError("procctl upgrade failed")
        results["upgrade_ms"] = upgrade_s * 1000
        load.phase = "after"
        time.sleep(1)
        load.finish()
        for phase in ("before", "restart", "reload", "upgrade"):
            results[phase] = load.figures(phase)
    finally:
        sup.stop()
    tmp = tempfile.mkdtemp(prefix="procctl-bench")
    with open(os.path.join(tmp, "app.py"), "w") as f:
        f.write(GUNICORN_APP)
    own = {"name": "web", "argv": ["sh", "-c", f"exec {' '.join(gunicorn)} -b 127.0.0.1:$PORT app:app"],
           "n": 4, "extra": f'port = {port + 10}\nready = {{ http = "http://127.0.0.1:{{port}}/" }}'}
    sup = Procctl(tmp, [own]).start()
    try:
        wait_until(lambda: sup.ctl("wait", "web", "--timeout", "1s")[1] == 0, 60, 0.1)
        load = HttpLoad([port + 10 + i for i in range(4)])
        time.sleep(seconds)
        load.phase = "restart"
        sup.ctl("restart", "web")
        load.phase = "after"
        time.sleep(0.5)
        load.finish()
        results["before_without_listen"] = load.figures("before")
        results["restart_without_listen"] = load.figures("restart")
    finally:
        sup.stop()
    return results


def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def unpack(out):
    """A scenario returns its values, or its values and a dict of further figures."""
    return out if isinstance(out, tuple) else (out, None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs and smaller counts")
    ap.add_argument("--only", help="comma-separated scenario keys")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench/results.json"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-supervisord", action="store_true", help="procctl only (an A/B run of two builds)")
    ap.add_argument("--bin", metavar="DIR",
                    help="run the procagent and procctl in DIR (another build, to compare); implies --no-build")
    args = ap.parse_args()
    if args.bin:
        global AGENT, CTL
        AGENT, CTL = (os.path.join(os.path.abspath(args.bin), name) for name in ("procagent", "procctl"))
        for binary in (AGENT, CTL):
            if not os.access(binary, os.X_OK):
                ap.error(f"--bin: no executable {binary}")
    elif not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    sv = None if args.no_supervisord else find_supervisor()
    if not sv and not args.no_supervisord:
        print("supervisord not found: `pip install supervisor` to compare with it", file=sys.stderr)
    make_sv = (lambda tmp, p: Supervisord(tmp, p, sv)) if sv else None
    no_cgroups = lambda tmp, p: Procctl(tmp, p, agent_args=["--no-cgroups"])
    q = args.quick
    runs = 5 if q else 21

    scenarios = [
        ("list", "list, 100 instances (ms)", lambda m: s_list(m, runs), True),
        ("crash", "SIGKILL to replacement running (ms)", lambda m: s_crash(m, 5 if q else 12), True),
        ("restart", "restart of one instance, CLI returns (ms)", lambda m: s_restart(m, runs), True),
        ("spawn100", "100 instances up from agent start (ms)", lambda m: s_spawn(m, 100, 2 if q else 5), True),
        ("spawn1000", "1,000 instances up from agent start (ms)", lambda m: s_spawn(m, 1000, 1 if q else 3, notes={}), True),
        ("scale1000", "scale 0 -> 1,000, CLI returns (ms)", lambda m: s_scale(m, 1 if q else 3), False),
        ("stream", "send - stream into one worker (messages/s)", lambda m: s_stream(3 if q else 5, 50_000 if q else 200_000), False),
        ("reply", "one send --reply, whole process (ms)", lambda m: s_reply(runs), False),
        ("reply_php", "one send --reply to a Procctl\\AbstractProcess (ms)", lambda m: s_reply_library(runs, "php"), False),
        ("reply_py", "one send --reply to a procctl_worker.Worker (ms)", lambda m: s_reply_library(runs, "py"), False),
        ("reply_pya", "one send --reply to a procctl_worker.AsyncWorker (ms)", lambda m: s_reply_library(runs, "pya"), False),
        ("list_crashing", "list while 100 instances crash-loop (ms)", lambda m: s_list_under_crashes(m, runs), True),
        ("footprint", "agent with 1,000 idle instances", None, False),
        ("storm", "crash storm: 100 instances exiting at once until all fatal", None, False),
        ("spawn1000_groups", "1,000 instances up from agent start, --no-cgroups (ms)",
         lambda m: s_spawn(no_cgroups, 1000, 1 if q else 3, notes={}), False),
        ("footprint_groups", "agent with 1,000 idle instances, --no-cgroups", None, False),
        ("ready_event", "READY=1 sendto to `started` at a watcher (ms)", lambda m: s_notify(runs, False), False),
        ("wait_latency", "`started` at a watcher to `procctl wait` exit (ms)", lambda m: s_notify(runs, True), False),
        ("health_cpu", "agent CPU, 100 instances with a 1 s tcp health check", None, False),
        ("zero_downtime", "4 gunicorn behind listen under load: restart, reload, upgrade", None, False),
        ("recycle_cpu", "agent CPU per max_memory check of 100 instances", None, False),
        ("autoscale", "autoscale decision to the new instance started (ms, event times)", lambda m: s_autoscale(runs), False),
        ("hangup", f"list after {400 if q else 2000:,} send --reply clients hung up (ms)",
         lambda m: s_hangup(runs, 400 if q else 2000), False),
        ("metrics", "GET /metrics, 1,000 instances, in the bench (ms)", lambda m: s_metrics(runs, 1000, 5 if q else 10), False),
        ("idle_cpu", "idle CPU, 1,000 instances, no policy", None, False),
        ("ssh_list", "list, 10 instances: local, --host ssh://, ssh with ControlMaster (ms)", None, False),
        ("top", f"procctl top while {TOP_CRASHING} instances crash-loop", None, False),
    ]
    keys = {k for k, _, _, _ in scenarios}
    if args.only and set(args.only.split(",")) - keys:
        ap.error("unknown scenario: " + ", ".join(sorted(set(args.only.split(",")) - keys)))
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
        if key in ("footprint", "footprint_groups"):
            groups = key == "footprint_groups"
            suffix = ", --no-cgroups" if groups else ""
            rss, pss, ticks, how = s_footprint(no_cgroups if groups else Procctl)
            results[key] = {"procctl": {"rss_mib": rss, "pss_mib": pss, "idle_ticks_10s": ticks, "tracking": how}}
            theirs = ("", "")
            if make_sv and not groups:
                srss, spss, sticks, _ = s_footprint(make_sv)
                results[key]["supervisord"] = {"rss_mib": srss, "pss_mib": spss, "idle_ticks_10s": sticks}
                theirs = (f"{srss:.1f} / {spss:.1f}", str(sticks))
            rows.append((f"agent RSS / PSS, 1,000 instances{suffix} (MiB)", f"{rss:.1f} / {pss:.1f}", theirs[0], ""))
            rows.append((f"idle CPU over 10 s, 1,000 instances{suffix} (ticks)", str(ticks), theirs[1], ""))
            continue
        if key == "zero_downtime":
            r = s_zero_downtime(3 if q else 10)
            results[key] = {"title": title, "procctl": r}
            for phase, label in (("before", "steady, before"), ("restart", "during `restart web` (rolling)"),
                                 ("reload", "during a reload changing the command"),
                                 ("upgrade", "during `procctl upgrade` of the agent"),
                                 ("before_without_listen", "steady, own ports, no listen"),
                                 ("restart_without_listen", "during `restart web`, own ports, no listen")):
                f = r[phase]
                rows.append((f"gunicorn x4, {label}", f"{f['served']} served, {f['failed']} failed, p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms", "", ""))
                print(f"  {label}: {f}", file=sys.stderr)
            rows.append(("`procctl upgrade` of the agent, whole command (ms)", f"{r['upgrade_ms']:.1f}", "", ""))
            print(f"  procctl upgrade took {r['upgrade_ms']:.1f} ms", file=sys.stderr)
            continue
        if key == "recycle_cpu":
            r = s_recycle_cpu(100, 5 if q else 10)
            results[key] = {"title": title, "procctl": r}
            rows.append((title, f"{r['ms_per_check']:.3f} ms (agent CPU {r['max_memory']['cpu_ms']:.1f} ms in "
                         f"{r['max_memory']['seconds']:.0f} s; {r['none']['cpu_ms']:.1f} ms without a policy)", "", ""))
            continue
        if key == "idle_cpu":
            r = s_idle_cpu(1000, 10 if q else 30)
            results[key] = {"title": title, "procctl": r}
            rows.append((f"idle CPU over {r['seconds']} s, 1,000 instances, no policy",
                         f"{r['ticks']} ticks ({r['cpu_ms']:.1f} ms of CPU)", "", ""))
            continue
        if key == "ssh_list":
            r = s_ssh_list(5 if q else 21)
            results[key] = {"title": title, "procctl": {k: summary(v) for k, v in r.items()}}
            for k, label in (("local", "list, 10 instances, local (ms)"), ("ssh", "  the same, --host ssh://127.0.0.1 (ms)"),
                             ("ssh_true", "    `ssh 127.0.0.1 true` beside it (ms)"),
                             ("ssh_controlmaster", "  the same, ssh reusing a ControlMaster (ms)"),
                             ("ssh_controlmaster_true", "    `ssh 127.0.0.1 true` on that connection (ms)")):
                f = summary(r[k])
                rows.append((label, f"{f['median']:.2f} ({f['min']:.2f}-{f['max']:.2f})", "", ""))
            continue
        if key == "top":
            r = s_top(5 if q else 11, TOP_CRASHING, 10 if q else 30)
            ff = summary(r["first_frame_ms"])
            results[key] = {"title": title, "procctl": dict(r, first_frame=ff)}
            rows.append((f"procctl top, time to first frame, {TOP_CRASHING} instances crash-looping (ms)",
                         f"{ff['median']:.1f} ({ff['min']:.1f}-{ff['max']:.1f})", "", ""))
            rows.append((f"  top CPU over {r['seconds']:.0f} s in tmux ({r['exits']} crashes)",
                         f"{r['top_ticks']} ticks ({r['top_ticks'] / TICKS / r['seconds'] * 100:.1f}% of a core); "
                         f"agent {r['agent_ticks']} ticks", "", ""))
            continue
        if key == "health_cpu":
            r = s_health_cpu(100, 5 if q else 10)
            results[key] = {"title": title, "procctl": r}
            rows.append(("agent CPU, 100 instances with a 1 s tcp health check",
                         f"{r['ticks_per_s']:.1f} ticks/s ({r['cpu_percent_of_one_core']:.1f}% of a core)", "", ""))
            print(f"  {title}: {r['cpu_ticks']} ticks in {r['seconds']:.1f} s, {r['checks']} checks", file=sys.stderr)
            continue
        values, extra = unpack(run(Procctl))
        ours = summary(values)
        theirs = summary(unpack(run(make_sv))[0]) if (compare and make_sv) else None
        results[key] = {"title": title, "procctl": ours, "supervisord": theirs}
        if extra:
            results[key]["procctl"].update(extra)
        fmt = (lambda v: f"{v:,.0f}") if key == "stream" else (lambda v: f"{v:.2f}" if v < 100 else f"{v:.0f}")
        if key in ("ready_event", "wait_latency"):
            fmt = lambda v: f"{v:.3f}"
        cell = f"{fmt(ours['median'])} ({fmt(ours['min'])}-{fmt(ours['max'])})"
        ratio = ""
        if theirs:
            ratio = f"{theirs['median'] / ours['median']:.0f}x"
        rows.append((title, cell, fmt(theirs["median"]) if theirs else "", ratio))
        print(f"  {title}: {cell}", file=sys.stderr)
        if key == "hangup":
            fds = extra["socket_fds"]
            idle = extra["list_idle_ms"]
            rows.append(("  list before the clients (ms)", f"{fmt(idle['median'])} ({fmt(idle['min'])}-{fmt(idle['max'])})", "", ""))
            rows.append(("  agent socket fds: idle / last batch / after", f"{fds['idle']} / {fds['last_batch_connected']} / {fds['after_list_runs']}", "", ""))
            rows.append(("  messages received / sent", f"{extra['delivered']} / {extra['clients']}", "", ""))
        if key == "metrics":
            lj = extra["list_json_ms"]
            rows.append(("  agent CPU per scrape / per list --json (ms)",
                         f"{extra['agent_cpu_ms_per_scrape']:.1f} / {extra['agent_cpu_ms_per_list_json']:.1f}", "", ""))
            rows.append(("  procctl list --json, same fleet, whole process (ms)", f"{fmt(lj['median'])} ({fmt(lj['min'])}-{fmt(lj['max'])})", "", ""))
            rows.append(("  scrape size (KiB)", f"{extra['bytes'] / 1024:.0f}", "", ""))
            rows.append((f"  idle CPU over {extra['idle_seconds']} s, endpoint open (ticks)", str(extra["idle_ticks_endpoint_open"]), "", ""))
        if key == "wait_latency":
            total = extra["ready_to_wait_exit_ms"]
            rows.append(("  READY=1 sendto to `procctl wait` exit (ms)", f"{fmt(total['median'])} ({fmt(total['min'])}-{fmt(total['max'])})", "", ""))
        if extra and "tracking" in extra:
            rows[-1] = (rows[-1][0], rows[-1][1] + f" [{extra['tracking']}]", rows[-1][2], rows[-1][3])
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

"""The library's own tests: each worker runs as a child with one end of a socket pair on fd 3,
the way procagent starts it, and the test plays the agent. Run: python3 -m pytest clients/python
"""
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from procctl_worker import decode_arg, split_lines

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = os.path.dirname(HERE)
DEADLINE = 10.0

# The same worker in both styles: (base class, "async " or "", "await " or "").
STYLES = {"plain": ("Worker", "", ""), "asyncio": ("AsyncWorker", "async ", "await ")}


def test_decode_arg():
    assert decode_arg(None) == {}
    assert decode_arg("") == {}
    assert decode_arg('{"a": 1, "b": {"c": [true]}}') == {"a": 1, "b": {"c": [True]}}
    for bad in ["3", '"x"', "{oops"]:
        with pytest.raises(ValueError):
            decode_arg(bad)


def test_split_lines_keeps_the_unfinished_rest():
    # (buffer, data) -> (lines, rest)
    cases = [
        (b"", b"a\nb\n", ["a", "b"], b""),
        (b"", b"a\nb", ["a"], b"b"),
        (b"b", b"c\n", ["bc"], b""),
        (b"", b"\n", [""], b""),
        (b"", b"caf\xc3\xa9\n\xff\n", ["caf\u00e9", "\ufffd"], b""),
    ]
    for buffer, data, lines, rest in cases:
        assert split_lines(buffer, data) == (lines, rest), (buffer, data)


class Child:
    """A worker script run the way procagent runs it, with the agent's end of its pipe."""

    def __init__(self, tmp_path, style, body, env=None):
        base, async_, await_ = STYLES[style]
        script = tmp_path / f"worker_{style}.py"
        body = textwrap.dedent(body).replace("ASYNC ", async_).replace("AWAIT ", await_)
        script.write_text(
            f"import sys\nfrom procctl_worker import {base}\n\nclass W({base}):\n"
            + textwrap.indent(body, "    ")
            + "\n\nW().start()\n"
        )
        self.pipe, theirs = socket.socketpair()
        environ = dict(os.environ, PYTHONPATH=LIBRARY, PROCCTL_NAME="w", PROCCTL_INSTANCE="2", **(env or {}))
        environ["PROCCTL_PIPE_FD"] = str(theirs.fileno())
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        self.pipe.settimeout(DEADLINE)
        self.lines = self.pipe.makefile("r", encoding="utf-8", newline="\n")

    def send(self, *messages):
        self.pipe.sendall("".join(m + "\n" for m in messages).encode())

    def line(self):
        return self.lines.readline().rstrip("\n")

    def close(self):
        """Closes the agent's end for writing, as the agent does once its queue is empty."""
        self.pipe.shutdown(socket.SHUT_WR)

    def signal(self, number=signal.SIGTERM):
        self.process.send_signal(number)

    def wait(self):
        out, err = self.process.communicate(timeout=DEADLINE)
        return self.process.returncode, out.decode(), err.decode()


def started(child):
    """Waits until run() printed its first line, so signal handlers are in place."""
    return child.process.stdout.readline().decode().rstrip("\n")


@pytest.mark.parametrize("style", STYLES)
def test_replies_in_order_and_a_stop_drains_the_pipe(tmp_path, style):
    child = Child(
        tmp_path,
        style,
        """
        ASYNC def run(self, arg):
            print(self.process_name, self.instance, arg, flush=True)

        ASYNC def on_pipe_readable(self, message):
            if message == "twice":
                self.reply("first")
                return "second"
            return None if message == "silent" else f"got {message}"

        ASYNC def on_shutdown(self):
            print("shutdown", flush=True)
        """,
        env={"PROCCTL_ARG": '{"queue": "jobs"}'},
    )
    assert started(child) == "w 2 {'queue': 'jobs'}"
    child.send("a", "silent", "b c", "twice")
    assert [child.line() for _ in range(4)] == ["got a", "got b c", "first", "second"]
    child.signal()
    child.send(*[f"late-{i}" for i in range(100)])
    child.close()
    late = [line.rstrip("\n") for line in child.lines]
    assert len(late) == 100 and late[-1] == "got late-99"
    code, out, err = child.wait()
    assert (code, out) == (0, "shutdown\n"), err


@pytest.mark.parametrize("style", STYLES)
def test_an_uncaught_exception_is_logged_with_its_trace_and_exits_1(tmp_path, style):
    child = Child(
        tmp_path,
        style,
        """
        ASYNC def run(self, arg):
            print("run", flush=True)

        ASYNC def on_pipe_readable(self, message):
            raise LookupError(f"bad {message}")

        def on_exception(self, exc):
            print("on_exception", exc, flush=True)
        """,
    )
    assert started(child) == "run"
    child.send("job")
    code, out, err = child.wait()
    assert code == 1
    assert out == "on_exception bad job\n"
    assert "LookupError: bad job" in err and "Traceback (most recent call last)" in err, err


@pytest.mark.parametrize("style", STYLES)
def test_timers_fire_and_an_own_loop_ends_at_the_stop(tmp_path, style):
    child = Child(
        tmp_path,
        style,
        """
        ASYNC def run(self, arg):
            print("run", flush=True)
            self.add_timer(10, lambda t: print("tick", flush=True))
            self.after(30, lambda t: print("once", flush=True))
            gone = self.add_timer(20, lambda t: print("cleared", flush=True))
            self.clear_timer(gone)
            while AWAIT self.wait(5000):
                pass
            print("loop over", flush=True)

        ASYNC def on_shutdown(self):
            print("shutdown", flush=True)
        """,
    )
    assert started(child) == "run"
    ticks = 0
    while ticks < 3:
        line = child.process.stdout.readline().decode().rstrip("\n")
        assert line in ("tick", "once"), line
        ticks += line == "tick"
    child.signal()
    child.close()
    code, out, err = child.wait()
    assert code == 0, err
    assert "cleared" not in out
    assert out.endswith("loop over\nshutdown\n"), out
    assert "tick" not in out.split("loop over")[1], "no timer after the stop"


@pytest.mark.parametrize("style", STYLES)
def test_a_signal_from_elsewhere_ends_the_worker_once_its_pipe_is_quiet(tmp_path, style):
    # `kill PID` is no stop by procctl: the pipe stays open, and the worker ends anyway.
    child = Child(
        tmp_path,
        style,
        """
        ASYNC def run(self, arg):
            print("run", flush=True)

        ASYNC def on_shutdown(self):
            print("shutdown", flush=True)
        """,
    )
    assert started(child) == "run"
    child.signal()
    code, out, err = child.wait()
    assert (code, out) == (0, "shutdown\n"), err
    assert "not a stop by procctl" in err


@pytest.mark.parametrize("style", STYLES)
def test_ready_and_status_speak_sd_notify_to_an_abstract_socket(tmp_path, style):
    name = f"procctl-py-test-{os.getpid()}-{style}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(DEADLINE)
    child = Child(
        tmp_path,
        style,
        """
        ASYNC def run(self, arg):
            self.status("loading")
            self.ready("serving")
            print("run", flush=True)
        """,
        env={"NOTIFY_SOCKET": "@" + name},
    )
    assert [server.recv(4096), server.recv(4096)] == [b"STATUS=loading", b"READY=1\nSTATUS=serving"]
    assert started(child) == "run"
    child.signal()
    child.close()
    code, _, err = child.wait()
    assert code == 0, err
    server.close()


def test_post_runs_on_the_loop_from_another_thread(tmp_path):
    child = Child(
        tmp_path,
        "plain",
        """
        def run(self, arg):
            import threading
            print("run", flush=True)
            threading.Thread(target=lambda: self.post(lambda: self.reply("from a thread"))).start()
        """,
    )
    assert started(child) == "run"
    assert child.line() == "from a thread"
    child.signal()
    child.close()
    assert child.wait()[0] == 0


@pytest.mark.parametrize("style", STYLES)
def test_a_stop_by_procctl_ends_at_the_end_of_file_not_at_the_quiet_limit(tmp_path, style):
    child = Child(tmp_path, style, "ASYNC def run(self, arg):\n    print('run', flush=True)\n")
    assert started(child) == "run"
    child.signal()
    child.close()
    code, _, err = child.wait()
    assert code == 0, err
    assert "not a stop by procctl" not in err

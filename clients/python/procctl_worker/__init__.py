"""A worker supervised by procctl, in the shape of EasySwoole's and Swoft's custom processes.

A worker script defines a subclass and ends with ``MyWorker().start()``. ``start()`` runs
``run(arg)``, then the event loop: one ``on_pipe_readable(message)`` per message from the
agent (a returned string is the reply) and the timers of ``add_timer()``. On the stop signal
the loop stops firing timers, hands every message still in the pipe to ``on_pipe_readable``
until end of file (the agent closes the pipe once its queue for this instance is empty),
calls ``on_shutdown()`` and exits 0. An uncaught exception is logged with its trace, passed
to ``on_exception()``, and the process exits 1 so that procctl starts it again.

``Worker`` is the plain style: blocking code, the loop in the main thread. ``run()`` may
return at once and leave the loop to the library, or loop by itself and call
``self.wait(ms)`` whenever it wants messages and timers served (``wait`` returns False once
the process is asked to stop). Other threads may call ``reply()``, ``status()`` and
``post(fn)``, which runs ``fn`` on the loop.

``AsyncWorker`` is the asyncio style: ``run``, ``on_pipe_readable`` and ``on_shutdown`` may be
coroutines; messages are served while ``run()`` awaits, one at a time and in order.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

__all__ = ["Worker", "AsyncWorker", "decode_arg", "split_lines"]

#: Signals that ask for a stop; procctl sends the process's ``stop_signal`` (TERM by default).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

_READ_BYTES = 65536

#: After a stop signal, how long a quiet pipe is waited on for its end of file. A stop by
#: procctl closes the pipe as soon as its queue is written, so this is only reached when the
#: signal came from elsewhere (``kill PID``, ``procctl signal``) and no end will come.
DRAIN_QUIET = 1.0

_NOT_PROCCTL = "the pipe stayed open after the stop signal: not a stop by procctl, ending without its end of file"


def decode_arg(text: Optional[str]) -> Dict[str, Any]:
    """``PROCCTL_ARG`` (the ``arg`` table of procctl.toml, as JSON) as a dict; none is ``{}``."""
    if not text:
        return {}
    arg = json.loads(text)
    if not isinstance(arg, dict):
        raise ValueError("PROCCTL_ARG is not a JSON object")
    return arg


def split_lines(buffer: bytes, data: bytes) -> "tuple[List[str], bytes]":
    """The whole lines of ``buffer + data`` (decoded, without newlines) and what is left."""
    buffer += data
    *lines, rest = buffer.split(b"\n")
    return [line.decode("utf-8", "replace") for line in lines], rest


def _write_all(sock: socket.socket, data: bytes) -> None:
    """Writes all of ``data`` on a socket that may be non-blocking."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            _wait_writable(sock)
            continue
        view = view[sent:]


def _wait_writable(sock: socket.socket) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        selector.select()


class _Common:
    """What both styles share: identity, arg, replies, sd_notify, logging."""

    #: The signals that ask for a stop.
    stop_signals = STOP_SIGNALS

    def __init__(self) -> None:
        self.process_name: str = os.environ.get("PROCCTL_NAME") or os.path.basename(sys.argv[0] or "worker")
        self.instance: int = int(os.environ.get("PROCCTL_INSTANCE") or 0)
        self.arg: Dict[str, Any] = {}
        self._pipe: Optional[socket.socket] = None
        self._input_fd: Optional[int] = None
        self._buffer = b""
        self._write_lock = threading.Lock()
        self._notify_sock: Optional[socket.socket] = None
        self._stopping = False
        # When the pipe last brought something (and it was handled), or the stop signal came.
        self._last_read = 0.0

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self._stopping

    def reply(self, line: str) -> None:
        """Writes one reply line on the pipe (an unclaimed reply shows in ``procctl events``)."""
        if "\n" in line or "\r" in line:
            raise ValueError("a reply is one line: it cannot contain a newline")
        if self._pipe is None:
            raise RuntimeError('this process has no reply pipe (pipe = "fd" gives one)')
        with self._write_lock:
            _write_all(self._pipe, (line + "\n").encode("utf-8"))

    def ready(self, status: Optional[str] = None) -> None:
        """Tells procctl the process is ready (with ``ready = "notify"``), with a STATUS= text."""
        self._notify("READY=1" + ("" if status is None else "\nSTATUS=" + status))

    def status(self, text: str) -> None:
        """The STATUS= text ``procctl list`` shows (with ``ready = "notify"``)."""
        self._notify("STATUS=" + text)

    def log(self, text: str) -> None:
        """A line on stderr, which procctl keeps in the instance's log (``procctl logs`` names the instance)."""
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def _notify(self, text: str) -> None:
        address = os.environ.get("NOTIFY_SOCKET")
        if not address:
            return
        if address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        with self._write_lock:
            if self._notify_sock is None:
                self._notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify_sock.sendto(text.encode("utf-8"), address)

    def _open_pipe(self) -> None:
        fd = os.environ.get("PROCCTL_PIPE_FD")
        if fd:
            # One end of a Unix socket pair.
            self._pipe = socket.socket(fileno=int(fd))
            self._pipe.setblocking(False)
            self._input_fd = self._pipe.fileno()
        elif "PROCCTL_NAME" in os.environ and not os.isatty(0):
            # pipe = "stdin": messages without replies (with pipe = "none" stdin ends at once).
            os.set_blocking(0, False)
            self._input_fd = 0

    def _read_some(self) -> Optional[bytes]:
        """What the pipe has now: bytes, b"" at end of file, None when nothing yet."""
        try:
            if self._pipe is not None:
                return self._pipe.recv(_READ_BYTES)
            return os.read(self._input_fd, _READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return None
        except ConnectionResetError:
            return b""

    def start(self) -> None:
        """Runs the worker and exits: 0 after a clean stop, 1 after an uncaught exception."""
        try:
            self.arg = decode_arg(os.environ.get("PROCCTL_ARG"))
            self._lifetime()
        except Exception as exc:  # noqa: BLE001 - every failure ends the process the same way
            self._log_uncaught(exc)
            try:
                self.on_exception(exc)
            except Exception as again:  # noqa: BLE001
                self.log(f"on_exception raised {type(again).__name__}: {again}")
            sys.stdout.flush()
            os._exit(1)  # at once: a thread of the worker's must not hold the exit up
        sys.stdout.flush()
        sys.exit(0)

    def _lifetime(self) -> None:
        """run(), the loop and on_shutdown, as each kind of worker does them."""
        raise NotImplementedError

    def _log_uncaught(self, exc: BaseException) -> None:
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.log(f"uncaught {type(exc).__name__}: {exc}\n{trace.rstrip()}")


class Worker(_Common):
    """The plain style: blocking hooks, the loop in the main thread."""

    def run(self, arg: Dict[str, Any]) -> None:
        """The process body; ``arg`` is the ``arg`` table of procctl.toml."""

    def on_pipe_readable(self, message: str) -> Optional[str]:
        """One message (one line, without its newline); a returned string is the reply."""
        return None

    def on_shutdown(self) -> None:
        """Called once on a stop, after the last message; procctl kills at stop_timeout."""

    def on_exception(self, exc: BaseException) -> None:
        """An uncaught exception, already logged with its trace; the process exits 1 after this."""

    def __init__(self) -> None:
        super().__init__()
        self._timers: Dict[int, list] = {}
        self._next_timer = 0
        self._posted: "collections.deque[Callable[[], Any]]" = collections.deque()
        self._selector: Optional[selectors.BaseSelector] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None

    def _lifetime(self) -> None:
        self._open()
        self.run(self.arg)
        self.loop()
        self.on_shutdown()

    def loop(self) -> None:
        """Serves messages and timers until the process is stopped and its pipe is drained."""
        while not self._stopping:
            self._turn(None)
        while self._input_fd is not None:
            quiet_until = self._last_read + DRAIN_QUIET
            if time.monotonic() >= quiet_until:
                self.log(_NOT_PROCCTL)
                self._input_fd = None
                break
            self._turn(quiet_until)

    def wait(self, ms: float) -> bool:
        """Serves messages and timers for up to ``ms`` milliseconds or until a stop is asked
        for; False once the process is stopping (the caller's own loop should end)."""
        deadline = time.monotonic() + ms / 1000
        while not self._stopping and time.monotonic() < deadline:
            self._turn(deadline)
        return not self._stopping

    def add_timer(self, ms: float, fn: Callable[[int], Any]) -> int:
        """Calls ``fn(timer_id)`` every ``ms`` milliseconds (EasySwoole's ``Timer::loop``)."""
        return self._timer(ms, fn, True)

    def after(self, ms: float, fn: Callable[[int], Any]) -> int:
        """Calls ``fn(timer_id)`` once, after ``ms`` milliseconds (``Timer::after``)."""
        return self._timer(ms, fn, False)

    def clear_timer(self, timer_id: int) -> None:
        self._timers.pop(timer_id, None)

    def post(self, fn: Callable[[], Any]) -> None:
        """Runs ``fn()`` on the loop's thread; safe to call from any thread."""
        self._posted.append(fn)
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except BlockingIOError:
                pass  # a wake-up is already pending

    def _timer(self, ms: float, fn: Callable[[int], Any], repeats: bool) -> int:
        if ms <= 0:
            raise ValueError(f"a timer needs a period above 0 ms, not {ms}")
        self._next_timer += 1
        self._timers[self._next_timer] = [time.monotonic() + ms / 1000, ms / 1000, fn, repeats]
        return self._next_timer

    def _open(self) -> None:
        self._selector = selectors.DefaultSelector()
        # The signal handler runs between bytecodes; the wake-up socket makes a signal that
        # lands just before select() wake it all the same.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for number in self.stop_signals:
            signal.signal(number, self._on_stop_signal)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._open_pipe()
        if self._input_fd is not None:
            self._selector.register(self._input_fd, selectors.EVENT_READ)

    def _on_stop_signal(self, number: int, frame: Any) -> None:
        self._stopping = True
        self._last_read = time.monotonic()

    def _turn(self, deadline: Optional[float]) -> None:
        """One wait for a message, a timer, a signal or a post, and what it brings."""
        until = deadline
        if not self._stopping:
            for due, *_ in self._timers.values():
                until = due if until is None else min(until, due)
        timeout = None if until is None else max(0.0, until - time.monotonic())
        if self._posted:
            timeout = 0
        assert self._selector is not None, "start() opens the loop"
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._wake_r:
                try:
                    while self._wake_r.recv(256):
                        pass
                except BlockingIOError:
                    pass
            else:
                self._read_messages()
        while self._posted:
            self._posted.popleft()()
        if not self._stopping:
            self._fire_timers()

    def _read_messages(self) -> None:
        data = self._read_some()
        if data is None:
            return
        if data == b"":
            assert self._selector is not None and self._input_fd is not None
            self._selector.unregister(self._input_fd)
            self._input_fd = None
            rest, self._buffer = self._buffer, b""
            if rest:
                self._handle(rest.decode("utf-8", "replace"))
            return
        lines, self._buffer = split_lines(self._buffer, data)
        for line in lines:
            self._handle(line)
        self._last_read = time.monotonic()

    def _handle(self, message: str) -> None:
        answer = self.on_pipe_readable(message)
        if isinstance(answer, str) and self._pipe is not None:
            self.reply(answer)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        due = sorted((timer[0], timer_id) for timer_id, timer in self._timers.items() if timer[0] <= now)
        for when, timer_id in due:
            timer = self._timers.get(timer_id)
            if timer is None or self._stopping:
                continue  # cleared by an earlier callback, or a stop came
            _, every, fn, repeats = timer
            if repeats:
                # The next due time keeps to the schedule unless the loop fell behind it.
                timer[0] = max(when + every, now)
            else:
                del self._timers[timer_id]
            fn(timer_id)


class AsyncWorker(_Common):
    """The asyncio style: hooks may be coroutines; messages are served while run() awaits."""

    async def run(self, arg: Dict[str, Any]) -> None:
        """The process body; it may return at once or loop (``while await self.wait(ms)``).
        One still running once the pipe is drained after a stop is cancelled."""

    async def on_pipe_readable(self, message: str) -> Optional[str]:
        """One message (one line, without its newline); a returned string is the reply."""
        return None

    async def on_shutdown(self) -> None:
        """Called once on a stop, after the last message; procctl kills at stop_timeout."""

    def on_exception(self, exc: BaseException) -> None:
        """An uncaught exception, already logged with its trace; the process exits 1 after this."""

    def __init__(self) -> None:
        super().__init__()
        self._timers: Dict[int, asyncio.TimerHandle] = {}
        self._next_timer = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop_event: Optional[asyncio.Event] = None
        self._failed: Optional[asyncio.Future] = None
        self._tasks: set = set()
        self._readable: Optional[asyncio.Future] = None

    def _lifetime(self) -> None:
        asyncio.run(self._main())

    async def wait(self, ms: float) -> bool:
        """Sleeps up to ``ms`` milliseconds, less if a stop is asked for; False once stopping."""
        assert self._stop_event is not None, "start() runs the loop"
        try:
            await asyncio.wait_for(self._stop_event.wait(), ms / 1000)
        except asyncio.TimeoutError:
            pass
        return not self._stopping

    def add_timer(self, ms: float, fn: Callable[[int], Any]) -> int:
        """Calls ``fn(timer_id)`` every ``ms`` milliseconds; a coroutine it returns is awaited
        in a task of its own."""
        return self._timer(ms, fn, True)

    def after(self, ms: float, fn: Callable[[int], Any]) -> int:
        """Calls ``fn(timer_id)`` once, after ``ms`` milliseconds."""
        return self._timer(ms, fn, False)

    def clear_timer(self, timer_id: int) -> None:
        handle = self._timers.pop(timer_id, None)
        if handle is not None:
            handle.cancel()

    def _timer(self, ms: float, fn: Callable[[int], Any], repeats: bool) -> int:
        if ms <= 0:
            raise ValueError(f"a timer needs a period above 0 ms, not {ms}")
        loop = self._loop
        assert loop is not None, "timers are added once start() runs the loop"
        self._next_timer += 1
        timer_id = self._next_timer
        first = loop.time() + ms / 1000

        def fire(when: float) -> None:
            if self._stopping or timer_id not in self._timers:
                return
            if repeats:
                self._timers[timer_id] = loop.call_at(max(when + ms / 1000, loop.time()), fire, when + ms / 1000)
            else:
                del self._timers[timer_id]
            try:
                result = fn(timer_id)
            except Exception as exc:  # noqa: BLE001
                return self._fail(exc)
            if inspect.isawaitable(result):
                self._track(asyncio.ensure_future(result))

        self._timers[timer_id] = loop.call_at(first, fire, first)
        return timer_id

    def _track(self, task: "asyncio.Future") -> None:
        self._tasks.add(task)

        def done(task: "asyncio.Future") -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self._fail(task.exception())

        task.add_done_callback(done)

    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(exc)

    def _on_stop_signal(self) -> None:
        self._stopping = True
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(False)  # the reader waits again, with the quiet limit
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        assert self._stop_event is not None
        self._stop_event.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._failed = self._loop.create_future()
        for number in self.stop_signals:
            self._loop.add_signal_handler(number, self._on_stop_signal)
        self._open_pipe()
        reader = asyncio.ensure_future(self._read_loop()) if self._input_fd is not None else None
        if reader is not None:
            self._track(reader)
        body = self.run(self.arg)
        runner = asyncio.ensure_future(body) if inspect.isawaitable(body) else None
        if runner is not None:
            self._track(runner)
        stopped = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({stopped, self._failed}, return_when=asyncio.FIRST_COMPLETED)
            if self._failed.done():
                self._failed.result()  # raises what failed
            if reader is not None and not reader.done():
                # The rest of the queue, up to end of file.
                await asyncio.wait({reader, self._failed}, return_when=asyncio.FIRST_COMPLETED)
                if self._failed.done():
                    self._failed.result()
            if runner is not None and not runner.done():
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            if self._failed.done():
                self._failed.result()
            result = self.on_shutdown()
            if inspect.isawaitable(result):
                await result
        finally:
            stopped.cancel()

    async def _read_loop(self) -> None:
        loop = self._loop
        assert loop is not None and self._input_fd is not None
        fd = self._input_fd
        while True:
            data = self._read_some()
            if data is None:
                self._readable = loop.create_future()
                loop.add_reader(fd, lambda: self._readable.done() or self._readable.set_result(True))
                try:
                    # Once stopping, a pipe quiet for DRAIN_QUIET will not end by itself.
                    timeout = DRAIN_QUIET if self._stopping else None
                    if not await asyncio.wait_for(asyncio.shield(self._readable), timeout):
                        continue  # the stop signal came: wait again, with the quiet limit
                except asyncio.TimeoutError:
                    self.log(_NOT_PROCCTL)
                    return
                finally:
                    loop.remove_reader(fd)
                    self._readable = None
                continue
            if data == b"":
                rest, self._buffer = self._buffer, b""
                if rest:
                    await self._handle(rest.decode("utf-8", "replace"))
                self._input_fd = None
                return
            lines, self._buffer = split_lines(self._buffer, data)
            for line in lines:
                await self._handle(line)

    async def _handle(self, message: str) -> None:
        answer = self.on_pipe_readable(message)
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, str) and self._pipe is not None:
            self.reply(answer)

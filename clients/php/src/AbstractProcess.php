<?php

declare(strict_types=1);

namespace Procctl;

/**
 * A worker supervised by procctl, in the shape of EasySwoole's AbstractProcess.
 *
 * A worker script defines a subclass and ends with `(new MyWorker())->start();`. start() runs
 * run($arg), then the event loop: one onPipeReadable() per message from the agent (a
 * returned string is the reply) and the timers of addTimer(). On the stop signal the loop
 * stops firing timers, hands every message still in the pipe to onPipeReadable() until end
 * of file (the agent closes the pipe once its queue for this instance is empty), calls
 * onShutDown() and exits 0. An uncaught exception is logged with its trace, passed to
 * onException(), and the process exits 1 so that procctl starts it again.
 *
 * run() may return at once and leave the loop to the library, or loop by itself and call
 * wait($ms) whenever it wants messages and timers served; wait() returns false once the
 * process is asked to stop.
 */
abstract class AbstractProcess
{
    /** Signals that ask for a stop; procctl sends the process's `stop_signal` (TERM by default). */
    protected const STOP_SIGNALS = [SIGTERM, SIGINT, SIGQUIT];

    private const READ_BYTES = 65536;

    /**
     * After a stop signal, how long a quiet pipe is waited on for its end of file. A stop by
     * procctl closes the pipe as soon as its queue is written, so this is only reached when
     * the signal came from elsewhere (`kill PID`, `procctl signal`) and no end will come.
     */
    private const DRAIN_QUIET = 1.0;

    private static ?AbstractProcess $current = null;

    /** @var resource|null where messages arrive */
    private $input = null;
    /** @var resource|null where replies go (the same socket as $input with pipe = "fd") */
    private $output = null;
    private string $buffer = '';
    private bool $stopping = false;
    /** When the pipe last brought something (and it was handled), or the stop signal came. */
    private float $lastRead = 0.0;
    /** @var array<int, array{float, int, callable, bool}> id => [due, every ms, callback, repeats] */
    private array $timers = [];
    private int $nextTimer = 0;
    private ?\Socket $notify = null;
    private string $processName;
    private int $instance;
    private array $arg = [];

    public function __construct()
    {
        $this->processName = (string) (getenv('PROCCTL_NAME') ?: basename($_SERVER['argv'][0] ?? 'worker', '.php'));
        $this->instance = (int) (getenv('PROCCTL_INSTANCE') ?: 0);
        self::$current = $this;
    }

    /** The process body; `$arg` is the `arg` table of procctl.toml. */
    abstract protected function run(array $arg);

    /** One message from the agent (one line, without its newline); a returned string is the reply. */
    protected function onPipeReadable(string $message)
    {
        return null;
    }

    /** Called once on a stop, after the last message; procctl kills the process at stop_timeout. */
    protected function onShutDown()
    {
    }

    /** An uncaught exception, already logged with its trace; the process exits 1 after this. */
    protected function onException(\Throwable $throwable, ...$args)
    {
    }

    /** Runs the worker and exits: 0 after a clean stop, 1 after an uncaught exception. */
    public function start(): never
    {
        try {
            $this->arg = self::decodeArg(getenv('PROCCTL_ARG'));
            $this->open();
            $this->run($this->arg);
            $this->loop();
            $this->onShutDown();
        } catch (\Throwable $throwable) {
            $this->log(sprintf(
                "uncaught %s: %s\n%s",
                get_class($throwable),
                $throwable->getMessage(),
                $throwable->getTraceAsString(),
            ));
            try {
                $this->onException($throwable);
            } catch (\Throwable $again) {
                $this->log('onException threw ' . get_class($again) . ': ' . $again->getMessage());
            }
            exit(1);
        }
        exit(0);
    }

    /** Serves messages and timers until the process is stopped and its pipe is drained. */
    public function loop(): void
    {
        while (!$this->stopping) {
            $this->turn(null);
        }
        while ($this->input !== null) {
            $quietUntil = $this->lastRead + self::DRAIN_QUIET;
            if (microtime(true) >= $quietUntil) {
                $this->log('the pipe stayed open after the stop signal: not a stop by procctl, ending without its end of file');
                $this->input = null;
                break;
            }
            $this->turn($quietUntil);
        }
    }

    /**
     * Serves messages and timers for up to `$ms` milliseconds, or until a stop is asked for.
     * Returns false once the process is stopping: the caller's own loop should end.
     */
    public function wait(int $ms): bool
    {
        $deadline = microtime(true) + $ms / 1000;
        while (!$this->stopping && microtime(true) < $deadline) {
            $this->turn($deadline);
        }
        return !$this->stopping;
    }

    /** Whether a stop was asked for. */
    public function isStopping(): bool
    {
        return $this->stopping;
    }

    /** Calls `$callback($timerId)` every `$ms` milliseconds (EasySwoole's Timer::loop). */
    public function addTimer(int $ms, callable $callback): int
    {
        return $this->timer($ms, $callback, true);
    }

    /** Calls `$callback($timerId)` once, after `$ms` milliseconds (EasySwoole's Timer::after). */
    public function after(int $ms, callable $callback): int
    {
        return $this->timer($ms, $callback, false);
    }

    public function clearTimer(int $id): void
    {
        unset($this->timers[$id]);
    }

    /** Writes one reply line on the pipe (an unclaimed reply shows in `procctl events`). */
    public function reply(string $line): void
    {
        if (strpbrk($line, "\r\n") !== false) {
            throw new \InvalidArgumentException('a reply is one line: it cannot contain a newline');
        }
        if ($this->output === null) {
            throw new \LogicException('this process has no reply pipe (pipe = "fd" gives one)');
        }
        $bytes = $line . "\n";
        while ($bytes !== '') {
            $written = @fwrite($this->output, $bytes);
            if ($written === false) {
                throw new \RuntimeException('the reply pipe is closed');
            }
            $bytes = substr($bytes, $written);
            if ($bytes !== '') {
                $read = null;
                $write = [$this->output];
                $except = null;
                @stream_select($read, $write, $except, null);
            }
        }
    }

    /** Tells procctl the process is ready (with `ready = "notify"`), with a STATUS= text if given. */
    public function ready(?string $status = null): void
    {
        $this->notify("READY=1" . ($status === null ? '' : "\nSTATUS=" . $status));
    }

    /** The STATUS= text `procctl list` shows (with `ready = "notify"`). */
    public function status(string $status): void
    {
        $this->notify("STATUS=" . $status);
    }

    /** The process's name in procctl.toml. */
    public function getProcessName(): string
    {
        return $this->processName;
    }

    /** This instance's index, from 0. */
    public function getInstance(): int
    {
        return $this->instance;
    }

    public function getArg(): array
    {
        return $this->arg;
    }

    /** The worker of this process, for code that has no reference to it. */
    public static function current(): ?AbstractProcess
    {
        return self::$current;
    }

    /** A line on stderr, which procctl keeps in the instance's log (`procctl logs` names the instance). */
    protected function log(string $line): void
    {
        fwrite(STDERR, $line . "\n");
    }

    private function open(): void
    {
        pcntl_async_signals(true);
        foreach (static::STOP_SIGNALS as $signal) {
            // Not restarting system calls: the signal ends the loop's stream_select.
            pcntl_signal($signal, fn() => $this->stopSignalled(), false);
        }
        $fd = getenv('PROCCTL_PIPE_FD');
        if ($fd !== false && $fd !== '') {
            $pipe = @fopen('php://fd/' . (int) $fd, 'r+');
            if ($pipe === false) {
                throw new \RuntimeException("no message pipe on fd $fd");
            }
            $this->input = $pipe;
            $this->output = $pipe;
        } elseif (getenv('PROCCTL_NAME') !== false && !stream_isatty(STDIN)) {
            // pipe = "stdin": messages, without replies (with pipe = "none" stdin ends at once).
            $this->input = STDIN;
        }
        if ($this->input !== null) {
            stream_set_blocking($this->input, false);
            stream_set_read_buffer($this->input, 0);
        }
    }

    private function stopSignalled(): void
    {
        $this->stopping = true;
        $this->lastRead = microtime(true);
    }

    /** One wait for a message, a timer or a signal, and what it brings. */
    private function turn(?float $deadline): void
    {
        $now = microtime(true);
        $until = $deadline;
        if (!$this->stopping) {
            foreach ($this->timers as [$due]) {
                $until = $until === null ? $due : min($until, $due);
            }
        }
        $timeout = $until === null ? null : max(0.0, $until - $now);
        if ($this->input === null) {
            // Nothing to read: wait for the next timer or a stop signal. The signals are
            // blocked from the check to the wait, so one that comes in between is not missed.
            pcntl_sigprocmask(SIG_BLOCK, static::STOP_SIGNALS, $mask);
            if (!$this->stopping) {
                $signal = $timeout === null
                    ? @pcntl_sigwaitinfo(static::STOP_SIGNALS)
                    : @pcntl_sigtimedwait(static::STOP_SIGNALS, $info, (int) $timeout, (int) (fmod($timeout, 1.0) * 1e9));
                if (is_int($signal) && $signal > 0) {
                    $this->stopSignalled();
                }
            }
            pcntl_sigprocmask(SIG_SETMASK, $mask);
        } else {
            // A stop that lands between the check above and the select is not missed: the
            // agent closes the pipe on a stop, and end of file wakes the select.
            $read = [$this->input];
            $write = null;
            $except = null;
            $seconds = $timeout === null ? null : (int) $timeout;
            $micros = $timeout === null ? null : (int) (fmod($timeout, 1.0) * 1e6);
            $ready = @stream_select($read, $write, $except, $seconds, $micros);
            if ($ready) {
                $this->readMessages();
            }
        }
        if (!$this->stopping) {
            $this->fireTimers();
        }
    }

    private function readMessages(): void
    {
        $chunk = @fread($this->input, self::READ_BYTES);
        if ($chunk === false || ($chunk === '' && feof($this->input))) {
            $this->input = null;
            if ($this->buffer !== '') {
                $rest = $this->buffer;
                $this->buffer = '';
                $this->handle($rest);
            }
            return;
        }
        $this->buffer .= $chunk;
        $start = 0;
        while (($end = strpos($this->buffer, "\n", $start)) !== false) {
            $line = substr($this->buffer, $start, $end - $start);
            $start = $end + 1;
            $this->handle($line);
        }
        $this->buffer = substr($this->buffer, $start);
        $this->lastRead = microtime(true);
    }

    private function handle(string $message): void
    {
        $answer = $this->onPipeReadable($message);
        if (is_string($answer) && $this->output !== null) {
            $this->reply($answer);
        }
    }

    private function fireTimers(): void
    {
        $now = microtime(true);
        $due = array_filter($this->timers, fn(array $timer): bool => $timer[0] <= $now);
        uasort($due, fn(array $a, array $b): int => $a[0] <=> $b[0]);
        foreach ($due as $id => [$when, $every, $callback, $repeats]) {
            if (!isset($this->timers[$id]) || $this->stopping) {
                continue; // cleared by an earlier callback, or a stop came
            }
            if ($repeats) {
                // The next due time keeps to the schedule unless the loop fell behind it.
                $this->timers[$id][0] = max($when + $every / 1000, $now);
            } else {
                unset($this->timers[$id]);
            }
            $callback($id);
        }
    }

    private function timer(int $ms, callable $callback, bool $repeats): int
    {
        if ($ms < 1) {
            throw new \InvalidArgumentException("a timer needs at least 1 ms, not $ms");
        }
        $id = ++$this->nextTimer;
        $this->timers[$id] = [microtime(true) + $ms / 1000, $ms, $callback, $repeats];
        return $id;
    }

    private function notify(string $text): void
    {
        $address = getenv('NOTIFY_SOCKET');
        if ($address === false || $address === '') {
            return;
        }
        if ($address[0] === '@') {
            $address = "\0" . substr($address, 1); // an abstract socket
        }
        if ($this->notify === null) {
            $socket = socket_create(AF_UNIX, SOCK_DGRAM, 0);
            // socket_connect takes the address with its length, so an abstract name (a
            // leading NUL) survives; socket_sendto would cut it at the NUL.
            if ($socket === false || !@socket_connect($socket, $address)) {
                $error = $socket === false ? socket_last_error() : socket_last_error($socket);
                throw new \RuntimeException("cannot reach NOTIFY_SOCKET $address: " . socket_strerror($error));
            }
            $this->notify = $socket;
        }
        if (@socket_send($this->notify, $text, strlen($text), 0) === false) {
            throw new \RuntimeException('cannot write to NOTIFY_SOCKET: ' . socket_strerror(socket_last_error($this->notify)));
        }
    }

    /** PROCCTL_ARG as an array; a value that is not a JSON object is an error worth stopping for. */
    public static function decodeArg(string|false $json): array
    {
        if ($json === false || $json === '') {
            return [];
        }
        $arg = json_decode($json, true, 512, JSON_THROW_ON_ERROR);
        if (!is_array($arg)) {
            throw new \UnexpectedValueException('PROCCTL_ARG is not a JSON object');
        }
        return $arg;
    }
}

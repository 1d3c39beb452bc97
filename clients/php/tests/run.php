<?php
// The library's own tests: each worker runs as a child with one end of a socket pair on fd 3,
// the way procagent starts it, and this script plays the agent. Exits 1 if any check fails.
//   php clients/php/tests/run.php

declare(strict_types=1);

require __DIR__ . '/../autoload.php';

use Procctl\AbstractProcess;

const DEADLINE = 10.0;

$failures = 0;
$checks = 0;

function check(bool $ok, string $what): void
{
    global $failures, $checks;
    $checks++;
    if (!$ok) {
        $failures++;
        fwrite(STDERR, "FAIL: $what\n");
    }
}

/** A worker script: the library and a class body, ending in start(). */
function script(string $body): string
{
    $path = tempnam(sys_get_temp_dir(), 'procctl-php-test');
    file_put_contents($path, "<?php\nrequire " . var_export(realpath(__DIR__ . '/../autoload.php'), true) . ";\n"
        . "class W extends Procctl\\AbstractProcess {\n$body\n}\n(new W())->start();\n");
    return $path;
}

final class Child
{
    /** @var resource */
    public $process;
    /** @var resource the agent's end of the pipe */
    public $pipe;
    /** @var resource */
    public $stdout;
    /** @var resource */
    public $stderr;
    private string $buffer = '';

    public function __construct(string $body, array $env = [])
    {
        $spec = [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w'], 3 => ['socket']];
        $env += ['PROCCTL_NAME' => 'w', 'PROCCTL_INSTANCE' => '2', 'PROCCTL_PIPE_FD' => '3', 'PATH' => getenv('PATH')];
        $this->process = proc_open([PHP_BINARY, script($body)], $spec, $pipes, null, $env);
        [, $this->stdout, $this->stderr, $this->pipe] = $pipes;
    }

    public function send(string $line): void
    {
        fwrite($this->pipe, "$line\n");
    }

    /** The next line from the worker's pipe, or null at the deadline or end of file. */
    public function line(): ?string
    {
        $end = microtime(true) + DEADLINE;
        while (($at = strpos($this->buffer, "\n")) === false) {
            $left = $end - microtime(true);
            $read = [$this->pipe];
            $write = $except = null;
            if ($left <= 0 || !stream_select($read, $write, $except, (int) $left, 100000)) {
                continue;
            }
            $chunk = fread($this->pipe, 8192);
            if ($chunk === '' || $chunk === false) {
                return null;
            }
            $this->buffer .= $chunk;
            if ($left <= 0) {
                return null;
            }
        }
        $line = substr($this->buffer, 0, $at);
        $this->buffer = substr($this->buffer, $at + 1);
        return $line;
    }

    /** The next line the worker prints, or null at the deadline or end of file. */
    public function printed(): ?string
    {
        $read = [$this->stdout];
        $write = $except = null;
        if (!stream_select($read, $write, $except, (int) DEADLINE)) {
            return null;
        }
        $line = fgets($this->stdout);
        return $line === false ? null : rtrim($line, "\n");
    }

    /** Closes the agent's end for writing, as the agent does once its queue is empty. */
    public function close(): void
    {
        stream_socket_shutdown($this->pipe, STREAM_SHUT_WR);
    }

    public function signal(int $signal): void
    {
        proc_terminate($this->process, $signal);
    }

    /** Waits for the exit; returns [code, stdout, stderr]. */
    public function wait(): array
    {
        $end = microtime(true) + DEADLINE;
        while (($status = proc_get_status($this->process))['running'] && microtime(true) < $end) {
            usleep(5000);
        }
        if ($status['running']) {
            proc_terminate($this->process, SIGKILL);
            return [null, '', 'still running at the deadline'];
        }
        return [$status['exitcode'], stream_get_contents($this->stdout), stream_get_contents($this->stderr)];
    }
}

// decodeArg: none is [], an object is an array, anything else is refused.
check(AbstractProcess::decodeArg(false) === [], 'no PROCCTL_ARG is []');
check(AbstractProcess::decodeArg('{"a":1,"b":{"c":[true]}}') === ['a' => 1, 'b' => ['c' => [true]]], 'an object');
foreach (['3', '"x"', '{oops'] as $bad) {
    try {
        AbstractProcess::decodeArg($bad);
        check(false, "PROCCTL_ARG $bad is refused");
    } catch (\Throwable) {
        check(true, '');
    }
}

// Messages get their returned replies, one per line, in order; reply() answers too.
$child = new Child(<<<'PHP'
    protected function run($arg) { echo $this->getProcessName(), ':', $this->getInstance(), ' ', json_encode($arg), "\n"; }
    protected function onPipeReadable(string $message) {
        if ($message === 'twice') { $this->reply('first'); return 'second'; }
        return $message === 'silent' ? null : "got $message";
    }
    protected function onShutDown() { echo "shutdown\n"; }
PHP, ['PROCCTL_ARG' => '{"queue":"jobs"}']);
foreach (['a', 'silent', 'b c', 'twice'] as $message) {
    $child->send($message);
}
$got = [$child->line(), $child->line(), $child->line(), $child->line()];
check($got === ['got a', 'got b c', 'first', 'second'], 'replies in order: ' . json_encode($got));
// A stop: the rest of the queue is read to end of file before onShutDown.
$child->signal(SIGTERM);
for ($i = 0; $i < 100; $i++) {
    $child->send("late-$i");
}
$child->close();
$late = [];
while (($line = $child->line()) !== null) {
    $late[] = $line;
}
check(count($late) === 100 && $late[99] === 'got late-99', 'messages queued at the stop are handled: ' . count($late));
[$code, $out] = $child->wait();
check($code === 0, "a clean stop exits 0, not $code");
check($out === "w:2 {\"queue\":\"jobs\"}\nshutdown\n", "run saw name, instance and arg, then onShutDown: $out");

// An uncaught exception: logged with its trace, onException, exit 1.
$child = new Child(<<<'PHP'
    protected function run($arg) {}
    protected function onPipeReadable(string $message) { throw new \DomainException("bad $message"); }
    protected function onException(\Throwable $throwable, ...$args) { echo 'onException ', $throwable->getMessage(), "\n"; }
PHP);
$child->send('job');
[$code, $out, $err] = $child->wait();
check($code === 1, "an uncaught exception exits 1, not $code");
check($out === "onException bad job\n", "onException ran: $out");
check(str_contains($err, 'DomainException: bad job') && str_contains($err, '#0 '), "logged with its trace: $err");

// Timers fire with no message; a run() that loops by itself ends at the stop.
$child = new Child(<<<'PHP'
    protected function run($arg) {
        $this->addTimer(10, function () { echo "tick\n"; });
        $once = $this->after(30, function () { echo "once\n"; });
        $gone = $this->addTimer(20, function () { echo "cleared\n"; });
        $this->clearTimer($gone);
        while ($this->wait(5000)) {}
        echo "loop over\n";
    }
    protected function onShutDown() { echo "shutdown\n"; }
PHP);
$seen = [];
while (count(array_keys($seen, 'tick')) < 3 || !in_array('once', $seen, true)) {
    $line = $child->printed();
    if ($line === null) {
        break;
    }
    $seen[] = $line;
}
check(count(array_keys($seen, 'tick')) >= 3 && in_array('once', $seen, true), 'timers fired: ' . json_encode($seen));
// A signal without the end of file a stop by procctl brings (`kill PID`): it ends all the same.
$child->signal(SIGTERM);
[$code, $out, $err] = $child->wait();
check(str_contains($err, 'not a stop by procctl'), "a quiet pipe ends the drain after a foreign signal: $err");
$lines = array_merge($seen, explode("\n", trim($out)));
check($code === 0, "timer worker exits 0, not $code");
check(count(array_keys($lines, 'once')) === 1 && !in_array('cleared', $lines, true), "after() once, cleared never: $out");
check(array_slice($lines, -2) === ['loop over', 'shutdown'], "wait() returned false at the stop: $out");

// Without a pipe (pipe = "none"), the loop waits on the timers and the stop signal alone.
$child = new Child(<<<'PHP'
    protected function run($arg) { echo "run\n"; $this->after(20, function () { echo "timer\n"; }); }
    protected function onShutDown() { echo "shutdown\n"; }
PHP, ['PROCCTL_PIPE_FD' => '']);
$seen = [$child->printed(), $child->printed()];
check($seen === ['run', 'timer'], 'a timer fires without a pipe: ' . json_encode($seen));
$child->signal(SIGTERM);
[$code, $out, $err] = $child->wait();
check($code === 0 && $out === "shutdown\n", "without a pipe a stop ends at once: $code $out $err");

// ready() and status() speak sd_notify to an abstract socket.
$name = 'procctl-php-test-' . getmypid();
$server = socket_create(AF_UNIX, SOCK_DGRAM, 0);
check(socket_bind($server, "\0$name"), 'bind an abstract socket');
$child = new Child(<<<'PHP'
    protected function run($arg) { $this->status('loading'); $this->ready('serving'); }
PHP, ['NOTIFY_SOCKET' => "@$name"]);
$datagrams = [];
socket_set_option($server, SOL_SOCKET, SO_RCVTIMEO, ['sec' => (int) DEADLINE, 'usec' => 0]);
for ($i = 0; $i < 2; $i++) {
    $bytes = socket_recv($server, $datagram, 4096, 0);
    $datagrams[] = $bytes === false ? null : $datagram;
}
check($datagrams === ['STATUS=loading', "READY=1\nSTATUS=serving"], 'notify datagrams: ' . json_encode($datagrams));
$child->signal(SIGTERM);
$child->close();
[$code] = $child->wait();
check($code === 0, "notify worker exits 0, not $code");

fwrite(STDOUT, sprintf("%d checks, %d failed\n", $checks, $failures));
exit($failures === 0 ? 0 : 1);

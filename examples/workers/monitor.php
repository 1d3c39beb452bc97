<?php
// The seed's Swoft MonitorProcess on procctl: run() is the `while (true)` loop of the
// monitor logic. $this->wait(3000) replaces Coroutine::sleep(3): it serves messages and
// timers meanwhile and returns false once procctl stops the process, so the loop ends and
// the library drains the pipe and calls onShutDown().
// With ready = "notify", `procctl list` shows its last report in STATUS.

require __DIR__ . '/../../clients/php/autoload.php';

use Procctl\AbstractProcess;

class MonitorProcess extends AbstractProcess
{
    protected function run($arg)
    {
        $this->ready('monitoring');
        $every = (int) ($arg['every_ms'] ?? 3000);
        do {
            [$one, $five] = explode(' ', (string) @file_get_contents('/proc/loadavg'));
            $memory = round(memory_get_usage() / 1024) . ' KiB';
            echo "monitor = " . json_encode(['load' => [$one, $five], 'memory' => $memory]) . "\n";
            $this->status("load $one, $five");
        } while ($this->wait($every));
    }

    protected function onPipeReadable(string $message)
    {
        // `procctl send --reply monitor report` asks for the last figures at any time.
        return $message === 'report' ? trim((string) @file_get_contents('/proc/loadavg')) : null;
    }
}

(new MonitorProcess())->start();

<?php
// The seed's "custom process warm restart": run() loads Work.php when the process starts,
// so each new process runs the newest Work.php. Edit Work.php, then
//   procctl restart reload      (rolling: one instance at a time, each waits for the last)
// or `kill PID` as in the seed: procctl starts it again at once, with the new code.

namespace App\ProcessReload;

require __DIR__ . '/../../../clients/php/autoload.php';

use Procctl\AbstractProcess;

class Process extends AbstractProcess
{
    protected function run($arg)
    {
        $pid = getmypid();
        echo "process for pid {$pid} start\n";
        require __DIR__ . '/Work.php';
        Work::run($this);
    }

    public function onShutDown()
    {
        $pid = getmypid();
        echo "process for pid {$pid} shutdown\n";
        parent::onShutDown();
    }
}

(new Process())->start();

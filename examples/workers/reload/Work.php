<?php
// The task of reload/Process.php, read anew by each process it starts: EasySwoole's
// Timer::loop(3000, ...) is the library's addTimer(3000, ...).

namespace App\ProcessReload;

use Procctl\AbstractProcess;

class Work
{
    public static function run(AbstractProcess $process): void
    {
        $process->addTimer(3000, function () {
            $pid = getmypid();
            echo "work v1 in pid {$pid}\n";
        });
    }
}

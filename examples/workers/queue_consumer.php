<?php
// The seed's EasySwoole custom process on procctl: the same class with a new base class.
// Each message from `procctl send` is a job; the returned string is its reply.
//   procctl send --any consumer job-1          (round-robin over the instances)
//   procctl send --reply consumer:0 job-2      (waits for "done job-2 by consumer:0")
// $arg is the `arg` table of its procctl.toml entry (EasySwoole's setArg).

require __DIR__ . '/../../clients/php/autoload.php'; // or Composer's vendor/autoload.php

use Procctl\AbstractProcess;

class Process extends AbstractProcess
{
    protected function run($arg)
    {
        // The process starts: returning leaves the loop (messages, timers) to the library.
        var_dump($this->getProcessName() . " run");
        var_dump($arg);
    }

    protected function onPipeReadable(string $message)
    {
        // One job; the agent sends the next once this one returns.
        usleep((int) ($this->getArg()['work_ms'] ?? 0) * 1000);
        return "done $message by {$this->getProcessName()}:{$this->getInstance()}";
    }

    protected function onShutDown()
    {
        // After the last job still queued for this instance: nothing accepted is lost.
        echo $this->getProcessName() . ':' . $this->getInstance() . " shutdown\n";
    }

    protected function onException(\Throwable $throwable, ...$args)
    {
        // Logged with its trace already; the process exits 1 and procctl starts it again.
    }
}

(new Process())->start();

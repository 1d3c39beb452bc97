<?php
// A procctl worker in PHP, the onPipeReadable of a Swoole custom process, for any server:
// read one message per line from the pipe on $PROCCTL_PIPE_FD and reply on it.
// Try: procctl send --reply NAME:0 ping

$fd = getenv('PROCCTL_PIPE_FD') ?: '3';
$name = getenv('PROCCTL_NAME') . ':' . getenv('PROCCTL_INSTANCE');
$pipe = fopen("php://fd/$fd", 'r+');
if ($pipe === false) {
    fwrite(STDERR, "$name: no pipe on fd $fd\n");
    exit(1);
}
echo "$name ready (pid " . getmypid() . ")\n";

while (($line = fgets($pipe)) !== false) {
    $message = rtrim($line, "\n");
    echo "$name got: $message\n";
    fwrite($pipe, "got $message\n");
    fflush($pipe);
}
exit(0);

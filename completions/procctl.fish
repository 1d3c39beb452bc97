# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_procctl_global_optspecs
    string join \n socket= host= color= h/help V/version
end

function __fish_procctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_procctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_procctl_using_subcommand
    set -l cmd (__fish_procctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c procctl -n "__fish_procctl_needs_command" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_needs_command" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_needs_command" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_needs_command" -s V -l version -d 'Print version'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "list" -d 'One row per instance: NAME, INSTANCE, PID, STATE, UPTIME, RESTARTS, LAST EXIT, CPU, MEM, and HEALTH and STATUS when an instance has them'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "pid" -d 'Print the pids of running instances, one per line (exit 1 when none runs)'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "start" -d 'Start stopped, exited or fatal instances; returns when each is running'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "stop" -d 'Stop gracefully (stop_signal, stop_timeout, then SIGKILL); returns when they are gone'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "restart" -d 'Warm restart, one instance at a time, each replacement running before the next; prints each old and new pid as it happens'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "signal" -d 'Send a signal (a name like HUP or a number) to each instance\'s process group'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "scale" -d 'Start or stop instances until COUNT exist; the count survives agent restarts'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "send" -d 'Write a message (the words joined by spaces) to each target instance\'s pipe; `-` reads one message per line from stdin'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "logs" -d 'Show the last lines of captured stdout and stderr, interleaved by time'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "events" -d 'Stream lifecycle events until interrupted'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "reload" -d 'Re-read the config: add, remove, restart changed (rolling), rescale; leave the rest alone'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "upgrade" -d 'Replace the running agent with a new binary in place, keeping every instance running'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "wait" -d 'Wait until every instance of TARGET is in a state (or gone); exit 1 at the timeout, naming those that are not'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "metrics" -d 'Print the metrics in the OpenMetrics text format, as `procagent --metrics` serves them'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "shutdown" -d 'Stop every instance, then the agent exits'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "import" -d 'Print a procctl.toml for the programs of a supervisord config, a Procfile or a pm2 ecosystem.json'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "top" -d 'A full-screen live view: a row per instance, the selected one\'s log below; `?` lists the keys'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "dial-stdio" -d 'Join stdin and stdout to the local agent\'s socket until either side closes'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "completions" -d 'Print a completion script for a shell'
complete -c procctl -n "__fish_procctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c procctl -n "__fish_procctl_using_subcommand list" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand list" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand list" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand list" -l json -d 'Print one JSON array with stable keys instead of a table'
complete -c procctl -n "__fish_procctl_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand pid" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand pid" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand pid" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand pid" -s h -l help -d 'Print help'
complete -c procctl -n "__fish_procctl_using_subcommand start" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand start" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand start" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand start" -s h -l help -d 'Print help'
complete -c procctl -n "__fish_procctl_using_subcommand stop" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand stop" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand stop" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand stop" -s h -l help -d 'Print help'
complete -c procctl -n "__fish_procctl_using_subcommand restart" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand restart" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand restart" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand restart" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand signal" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand signal" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand signal" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand signal" -s h -l help -d 'Print help'
complete -c procctl -n "__fish_procctl_using_subcommand scale" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand scale" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand scale" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand scale" -s h -l help -d 'Print help'
complete -c procctl -n "__fish_procctl_using_subcommand send" -l timeout -d 'How long an instance may read nothing (or, with --reply, take to answer)' -r
complete -c procctl -n "__fish_procctl_using_subcommand send" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand send" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand send" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand send" -l any -d 'Deliver each message to one running instance of NAME, round-robin'
complete -c procctl -n "__fish_procctl_using_subcommand send" -l reply -d 'Wait for one reply line from each instance and print it (prefixed NAME:INDEX when several)'
complete -c procctl -n "__fish_procctl_using_subcommand send" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand logs" -s n -l lines -d 'How many lines' -r
complete -c procctl -n "__fish_procctl_using_subcommand logs" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand logs" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand logs" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand logs" -s f -l follow -d 'Then keep printing new lines until interrupted'
complete -c procctl -n "__fish_procctl_using_subcommand logs" -s h -l help -d 'Print help'
complete -c procctl -n "__fish_procctl_using_subcommand events" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand events" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand events" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand events" -l json -d 'One JSON object per line instead of text'
complete -c procctl -n "__fish_procctl_using_subcommand events" -s h -l help -d 'Print help'
complete -c procctl -n "__fish_procctl_using_subcommand reload" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand reload" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand reload" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand reload" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand upgrade" -l binary -d 'The new procagent [default: the path the agent was started from]' -r
complete -c procctl -n "__fish_procctl_using_subcommand upgrade" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand upgrade" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand upgrade" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand upgrade" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand wait" -l for -d 'running (ready), stopped, exited, fatal, or gone (the instances no longer exist)' -r
complete -c procctl -n "__fish_procctl_using_subcommand wait" -l timeout -d 'How long to wait' -r
complete -c procctl -n "__fish_procctl_using_subcommand wait" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand wait" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand wait" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand wait" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand metrics" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand metrics" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand metrics" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand metrics" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand shutdown" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand shutdown" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand shutdown" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand shutdown" -s h -l help -d 'Print help'
complete -c procctl -n "__fish_procctl_using_subcommand import" -l from -d 'What every FILE is [default: told by its content]' -r -f -a "supervisord\t'supervisord\'s INI (`[program:x]`, `[include]` followed)'
procfile\t'`name: command` lines'
pm2\t'pm2\'s ecosystem file in JSON (`apps`)'"
complete -c procctl -n "__fish_procctl_using_subcommand import" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand import" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand import" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand top" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand top" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand top" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand top" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand dial-stdio" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand dial-stdio" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand dial-stdio" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand dial-stdio" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c procctl -n "__fish_procctl_using_subcommand completions" -l socket -d 'The agent\'s socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]' -r -F
complete -c procctl -n "__fish_procctl_using_subcommand completions" -l host -d 'Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]' -r
complete -c procctl -n "__fish_procctl_using_subcommand completions" -l color -d 'Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]' -r -f -a "auto\t''
always\t''
never\t''"
complete -c procctl -n "__fish_procctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "list" -d 'One row per instance: NAME, INSTANCE, PID, STATE, UPTIME, RESTARTS, LAST EXIT, CPU, MEM, and HEALTH and STATUS when an instance has them'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "pid" -d 'Print the pids of running instances, one per line (exit 1 when none runs)'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "start" -d 'Start stopped, exited or fatal instances; returns when each is running'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "stop" -d 'Stop gracefully (stop_signal, stop_timeout, then SIGKILL); returns when they are gone'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "restart" -d 'Warm restart, one instance at a time, each replacement running before the next; prints each old and new pid as it happens'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "signal" -d 'Send a signal (a name like HUP or a number) to each instance\'s process group'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "scale" -d 'Start or stop instances until COUNT exist; the count survives agent restarts'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "send" -d 'Write a message (the words joined by spaces) to each target instance\'s pipe; `-` reads one message per line from stdin'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "logs" -d 'Show the last lines of captured stdout and stderr, interleaved by time'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "events" -d 'Stream lifecycle events until interrupted'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "reload" -d 'Re-read the config: add, remove, restart changed (rolling), rescale; leave the rest alone'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "upgrade" -d 'Replace the running agent with a new binary in place, keeping every instance running'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "wait" -d 'Wait until every instance of TARGET is in a state (or gone); exit 1 at the timeout, naming those that are not'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "metrics" -d 'Print the metrics in the OpenMetrics text format, as `procagent --metrics` serves them'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "shutdown" -d 'Stop every instance, then the agent exits'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "import" -d 'Print a procctl.toml for the programs of a supervisord config, a Procfile or a pm2 ecosystem.json'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "top" -d 'A full-screen live view: a row per instance, the selected one\'s log below; `?` lists the keys'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "dial-stdio" -d 'Join stdin and stdout to the local agent\'s socket until either side closes'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "completions" -d 'Print a completion script for a shell'
complete -c procctl -n "__fish_procctl_using_subcommand help; and not __fish_seen_subcommand_from list pid start stop restart signal scale send logs events reload upgrade wait metrics shutdown import top dial-stdio completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

//! `procctl top` as a person uses it: in tmux, keys sent with `send-keys`, the screen read
//! with `capture-pane`.

use std::process::Command;

use crate::support::{Agent, CTL_TIMEOUT, WAIT, bin, run, wait_until};

/// A tmux server of its own (its own socket) running `procctl top` on the agent's socket.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn top(agent: &Agent) -> Tmux {
        let tmux = Tmux { socket: agent.path("tmux.sock") };
        let command = format!(
            "PROCCTL_SOCKET='{}' '{}' top; echo top ended with $?; sleep 600",
            agent.socket.display(),
            bin("procctl").display()
        );
        tmux.run(&["new-session", "-d", "-x", "120", "-y", "40", &command]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&self.socket).args(args).env_remove("TMUX");
        let out = run(&mut command, None, CTL_TIMEOUT);
        assert_eq!(out.code, Some(0), "tmux {args:?}: {out:?}");
        out.stdout
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend(keys);
        self.run(&args);
    }

    #[track_caller]
    fn wait_for(&self, what: &str, mut seen: impl FnMut(&str) -> bool) -> String {
        let mut last = String::new();
        let found = crate::support::poll_until(WAIT, std::time::Duration::from_millis(50), || {
            last = self.screen();
            seen(&last)
        });
        assert!(found, "the screen never showed {what}:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&self.socket).arg("kill-server");
        let _ = run(&mut command, None, CTL_TIMEOUT);
    }
}

/// The row of `id` on the screen, split into its cells.
fn row<'a>(screen: &'a str, id: &str) -> Option<Vec<&'a str>> {
    screen.lines().map(|line| line.split_whitespace().collect::<Vec<_>>()).find(|cells| cells.first() == Some(&id))
}

#[test]
fn top_shows_restarts_crashes_filters_scaling_and_follows_the_log() {
    let mut agent = Agent::start(
        "[process.web]\ncommand = [\"sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done\"]\n\
         start_secs = \"0s\"\nstop_timeout = \"5s\"\n\
         [process.crash]\ncommand = [\"sh\", \"-c\", \"sleep 0.1; exit 3\"]\nstart_secs = \"1s\"\nstart_retries = 1000\n",
    );
    let pid = agent.wait_running("web", 1)[0];
    let tmux = Tmux::top(&agent);
    // web:0 is the second row; select it, and its log follows below.
    tmux.wait_for("web:0 and its pid", |screen| row(screen, "web:0").is_some_and(|cells| cells[1] == pid.to_string()));
    tmux.keys(&["j"]);
    let screen = tmux.wait_for("web:0's log", |screen| screen.contains("web:0 log") && screen.contains("line "));
    let last =
        |screen: &str| screen.lines().filter_map(|line| line.strip_prefix("line ")?.trim().parse::<u32>().ok()).max();
    let before = last(&screen).unwrap();
    tmux.wait_for("the log moving on", |screen| last(screen).is_some_and(|now| now > before + 5));
    tmux.wait_for("a crash backing off", |screen| row(screen, "crash:0").is_some_and(|cells| cells[2] == "backoff"));

    tmux.keys(&["r"]);
    let screen = tmux.wait_for("a new pid for web:0", |screen| {
        row(screen, "web:0").is_some_and(|cells| cells[1] != pid.to_string() && cells[2] == "running")
    });
    assert!(screen.contains("web:0 restarted: pid"), "the outcome is in the status line:\n{screen}");

    tmux.keys(&["+"]);
    tmux.wait_for("web:1 after scaling up", |screen| row(screen, "web:1").is_some_and(|cells| cells[2] == "running"));

    tmux.keys(&["/", "c", "r", "Enter"]);
    tmux.wait_for("only crash rows", |screen| row(screen, "crash:0").is_some() && row(screen, "web:0").is_none());
    tmux.keys(&["Escape"]);
    tmux.wait_for("every row again", |screen| row(screen, "web:0").is_some());

    tmux.keys(&["?"]);
    tmux.wait_for("the help", |screen| screen.contains("q or Ctrl-C  quit"));
    tmux.keys(&["x", "q"]);
    let screen = tmux.wait_for("top's end", |screen| screen.contains("top ended with 0"));
    assert!(!screen.contains("NAME:INDEX"), "the terminal is restored:\n{screen}");
    // The agent keeps what top asked for; its fixture stops the rest.
    wait_until(WAIT, "two web instances", || agent.list("web").len() == 2);
}

#[test]
fn top_quits_on_ctrl_c_and_restores_the_terminal() {
    let mut agent = Agent::start("[process.web]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n");
    agent.wait_running("web", 1);
    let tmux = Tmux::top(&agent);
    tmux.wait_for("the rows", |screen| row(screen, "web:0").is_some());
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("top's end", |screen| screen.contains("top ended with 0"));
    assert!(!screen.contains("NAME:INDEX"), "{screen}");
}

#[test]
fn top_ends_when_the_agent_dies_and_restores_the_terminal() {
    let mut agent = Agent::start("[process.web]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n");
    agent.wait_running("web", 1);
    let tmux = Tmux::top(&agent);
    tmux.wait_for("the rows", |screen| row(screen, "web:0").is_some());
    agent.shutdown();
    let screen = tmux.wait_for("top's end", |screen| screen.contains("top ended with 1"));
    assert!(!screen.contains("NAME:INDEX") && screen.contains("procctl: "), "{screen}");
}

#[test]
fn top_is_exit_2_when_stdout_is_not_a_terminal() {
    let agent = Agent::start("[process.web]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n");
    let out = agent.ctl(&["top"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("terminal"), "{out:?}");
}

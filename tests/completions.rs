//! The committed completions must match what procctl generates. To regenerate them:
//! `PROCCTL_BLESS=1 cargo test -p procctl-tests --test blackbox completions`.

use crate::support::{WAIT, bin, run};

#[test]
fn committed_completions_match_the_cli() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../completions");
    let bless = std::env::var_os("PROCCTL_BLESS").is_some();
    for (shell, file) in [("bash", "procctl.bash"), ("zsh", "_procctl"), ("fish", "procctl.fish")] {
        let out = run(std::process::Command::new(bin("procctl")).args(["completions", shell]), None, WAIT);
        out.ok();
        let path = dir.join(file);
        if bless {
            std::fs::write(&path, &out.stdout).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == out.stdout,
            "completions/{file} is out of date: run `PROCCTL_BLESS=1 cargo test -p procctl-tests --test blackbox completions`"
        );
    }
}

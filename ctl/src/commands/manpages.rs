//! `procctl manpages DIR` (hidden): the man pages, generated from the clap tree with
//! clap_mangen: `procctl.1` and one `procctl-SUBCOMMAND.1` per visible subcommand. The copies
//! in `man/` are compared with these by a test (`PROCCTL_BLESS=1` rewrites them).

use std::path::Path;

use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::Status;
use crate::cli::Cli;
use crate::client::CtlError;

pub fn run(dir: &Path) -> Result<Status, CtlError> {
    let mut cli = Cli::command().disable_help_subcommand(true);
    // Building names the subcommands `procctl-list` (page names) and `procctl list` (synopses).
    cli.build();
    let pages: Vec<String> = cli
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .map(|sub| sub.get_display_name().unwrap_or(sub.get_name()).to_string())
        .collect();

    let mut main = Roff::new();
    main.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "Success, including a command with nothing to do."),
        (
            "1",
            "The agent refused, or the operation failed (unknown target, not running, timeout, a start that failed); the message on stderr names the target.",
        ),
        ("2", "Usage error."),
        ("3", "The agent cannot be reached; the message names the socket path."),
    ] {
        main.control("TP", []).text([bold(code)]).text([roman(meaning)]);
    }
    main.control("SH", ["ENVIRONMENT"]);
    main.control("TP", []).text([bold("PROCCTL_SOCKET")]).text([roman(
        "The socket of the agent, when --socket is not given. Otherwise \
         $XDG_RUNTIME_DIR/procctl/agent.sock, else /tmp/procctl-UID/agent.sock.",
    )]);
    for (name, meaning) in [
        ("PROCCTL_HOST", "The hosts to run on, as --host takes them, when --host is not given."),
        (
            "PROCCTL_SSH",
            "The ssh command and its options for --host, split as a shell would (default ssh); \
             -o BatchMode=yes is added, so ssh never prompts.",
        ),
        ("NO_COLOR", "When set and not empty, --color auto prints no colour."),
    ] {
        main.control("TP", []).text([bold(name)]).text([roman(meaning)]);
    }
    let mut see_also: Vec<String> = pages.iter().map(|page| format!("{page}(1)")).collect();
    see_also.extend(["procagent(8)".into(), "procctl.toml(5)".into()]);
    section(&mut main, "SEE ALSO", &see_also.join(", "));
    write(dir, Man::new(cli.clone()), &main)?;

    for sub in cli.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let mut extra = Roff::new();
        section(&mut extra, "SEE ALSO", "procctl(1), procagent(8), procctl.toml(5)");
        write(dir, Man::new(sub.clone()), &extra)?;
    }
    Ok(Status::Success)
}

fn section(roff: &mut Roff, title: &str, text: &str) {
    roff.control("SH", [title]).text([roman(text)]);
}

/// One page: clap_mangen's sections, then `extra`.
fn write(dir: &Path, man: Man, extra: &Roff) -> Result<(), CtlError> {
    let man = man.manual("procctl manual").source(format!("procctl {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut page = vec![];
    man.render(&mut page).expect("writing to a Vec cannot fail");
    // Without the preamble clap_mangen has already written (it defines the apostrophe).
    page.extend_from_slice(extra.to_roff().as_bytes());
    std::fs::write(&path, page).map_err(|e| CtlError::Failed(format!("cannot write {}: {e}", path.display())))
}

//! Programs a test needs from outside the repository (Docker, Chromium's driver,
//! Prometheus, PostgreSQL), found on the machine rather than built here. A test that finds
//! one missing says so and does without it: it has nothing to run against, or, for the
//! PostgreSQL twins, runs on SQLite. With `CI` set, as `.ci/run` sets it, a missing
//! program is a failure instead.

use std::process::Command;

/// Whether `program arg` runs and succeeds, with `program` looked up on `PATH`.
pub fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Returns `usable`, whether `what` is here. When it is not, says so on stderr, with what
/// happens `otherwise`; with `CI` set, panics instead, naming `what` and how to `install`
/// it.
pub fn available(usable: bool, what: &str, install: &str, otherwise: &str) -> bool {
    assert!(
        usable || std::env::var_os("CI").is_none(),
        "CI is set but {what} is not usable here ({install})"
    );
    if !usable {
        eprintln!("{what} is not usable here: {otherwise}");
    }
    usable
}

//! Programs a test needs from outside the repository (Docker, Chromium's driver,
//! Prometheus, PostgreSQL), found on the machine rather than built here. A test that finds
//! one missing fails, naming it and how to install it: no test passes without running.

use std::process::Command;

/// Whether `program arg` runs and succeeds, with `program` looked up on `PATH`.
pub fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Fails the test, naming `what` and how to `install` it, unless `usable`.
pub fn require(usable: bool, what: &str, install: &str) {
    assert!(
        usable,
        "{what} is not usable here ({install}; docs/reliability.md#what-the-tests-need)"
    );
}

//! The walkthrough: makes a development PKI, starts the platform and the five partner
//! profiles as separate processes over mutual TLS, and tells the story of consented
//! access (see `support/story.rs`), printing what each side did and what was allowed or
//! refused. It exits 0 only if every step behaved as told, and leaves no process running.

use end_to_end::processes::ensure_built;
use end_to_end::story::{ProcessStack, Story, tell};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    ensure_built();
    let dir = tempfile::tempdir().expect("work directory");
    let mut story = Story::default();
    let stack = ProcessStack::start(&mut story, dir.path()).await;
    tell(&mut story, &stack.view()).await;
    stack.stop();
    println!();
    if story.failures == 0 {
        println!("walkthrough: all {} steps behaved as told", story.steps);
        ExitCode::SUCCESS
    } else {
        println!(
            "walkthrough: {} of {} steps did NOT behave as told (logs in {})",
            story.failures,
            story.steps,
            dir.keep().display()
        );
        ExitCode::FAILURE
    }
}

//! The walkthrough: makes a development PKI, starts the platform and the three partner
//! profiles as separate processes over mutual TLS, and tells the story of consented
//! access (see `support/story.rs`), printing what each side did and what was allowed or
//! refused. It exits 0 only if every step behaved as told, and leaves no process running.

use consent_proto::platform::v1::partner_admin_client::PartnerAdminClient;
use end_to_end::processes::{PlatformPorts, WorkDir, ensure_built, start_partner, start_platform};
use end_to_end::story::{LocalStore, Stack, Story, register_profiles, tell};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    ensure_built();
    let dir = tempfile::tempdir().expect("work directory");
    let mut story = Story::default();
    story.act("Setting up: a development PKI, the platform and three partners as separate processes over mTLS");
    let work = WorkDir::new(dir.path());
    story.note(&format!(
        "work directory {} (removed at the end)",
        dir.path().display()
    ));
    let ports = PlatformPorts::free();
    let platform = start_platform(&work, ports).await;
    story.note(&format!(
        "platform: partners {} · operators {} · users {}",
        ports.partner, ports.operator, ports.user
    ));
    let mut operator = PartnerAdminClient::new(
        work.channel(ports.operator, Some("operator"))
            .await
            .expect("operator"),
    );
    register_profiles(&mut story, &mut operator).await;
    let music = start_partner(&work, "music", ports.partner).await;
    let video = start_partner(&work, "video", ports.partner).await;
    let bank = start_partner(&work, "bank", ports.partner).await;
    story.note(&format!(
        "partners: music {} · video {} · bank {}",
        music.addr, video.addr, bank.addr
    ));
    let stack = Stack {
        work: &work,
        partner: ports.partner,
        operator: ports.operator,
        user: ports.user,
        partners: vec![
            (
                "music",
                music.addr,
                Box::new(LocalStore(music.database.clone())),
            ),
            (
                "video",
                video.addr,
                Box::new(LocalStore(video.database.clone())),
            ),
            (
                "bank",
                bank.addr,
                Box::new(LocalStore(bank.database.clone())),
            ),
        ],
    };
    tell(&mut story, &stack).await;
    drop((music, video, bank, platform));
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

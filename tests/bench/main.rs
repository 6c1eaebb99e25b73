//! `bench`: what consent enforcement costs, measured against a baseline served by the same
//! stack in the same run. The platform runs as its own process; the baseline is a bare echo
//! service behind the platform's own mutual TLS and limits, answering each measured call
//! with the platform's own reply to it. Writes a Markdown table and a JSON file, and says
//! for each goal whether it is met. `--quick` runs every measurement briefly (for CI);
//! figures are not asserted.
//! `--only CALL` (read, send or denied) and `--in-flight N`, each repeatable, measure only
//! those points and nothing else, for profiling one of them.

mod echo;
mod load;
mod replicas;
mod report;

use clap::{Parser, Subcommand, ValueEnum};
use consent_core::clock::Clock;
use consent_proto::platform::v1 as pb;
use echo::Replies;
use end_to_end::processes::{
    PlatformPorts, Process, WorkDir, ensure_built, free_port, start_platform_named,
};
use end_to_end::{bearer, seed_family};
use load::Figures;
use pb::account_client::AccountClient;
use pb::messaging_client::MessagingClient;
use report::{Report, Row};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Concurrency levels measured.
const CONCURRENCY: [usize; 3] = [1, 32, 128];
/// Connections every level is spread over.
const CONNECTIONS: usize = 8;
/// Times each point is measured, each right after its baseline, so that a slow moment of
/// the shared machine lands on one round rather than on the figures shown.
const ROUNDS: usize = 3;
/// The benchmark measures consent enforcement, not the per-partner rate limiter.
pub const UNLIMITED: &str =
    "[limits]\npartner_requests_per_second = 100000000\npartner_burst = 100000000\n";
/// The platform logs as it does by default, not per call as in tests.
pub const PLATFORM_LOG: &str = "info";

/// What consent enforcement costs, measured against a bare echo service behind the same
/// mTLS stack, in the same run.
#[derive(Parser)]
struct Args {
    /// Run every measurement for a moment (for CI); figures are not asserted.
    #[arg(long)]
    quick: bool,
    /// Where results.md and results.json are written.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Measure only this call (repeatable); then only the chosen points are measured.
    #[arg(long = "only", value_enum, value_name = "CALL")]
    calls: Vec<Call>,
    /// Measure only with this many calls in flight (repeatable); then only the chosen
    /// points are measured.
    #[arg(long = "in-flight", value_name = "N")]
    in_flight: Vec<NonZeroUsize>,
    #[command(subcommand)]
    echo: Option<EchoCommand>,
}

/// The baseline runs as a process of its own, started by the benchmark.
#[derive(Subcommand)]
enum EchoCommand {
    /// Serves the recorded replies with the PKI in `pki` on `addr`.
    #[command(name = "serve-echo", hide = true)]
    Serve {
        pki: PathBuf,
        addr: SocketAddr,
        replies: PathBuf,
    },
}

struct Settings {
    point: Duration,
    quick: bool,
    out: PathBuf,
    /// The calls measured.
    calls: Vec<Call>,
    /// The concurrency levels measured.
    in_flight: Vec<usize>,
    /// Whether every point and every other measurement runs (no `--only`, no `--in-flight`).
    everything: bool,
}

impl From<Args> for Settings {
    fn from(args: Args) -> Self {
        Settings {
            point: if args.quick {
                Duration::from_millis(700)
            } else {
                Duration::from_secs(5)
            },
            quick: args.quick,
            out: args.out,
            everything: args.calls.is_empty() && args.in_flight.is_empty(),
            calls: if args.calls.is_empty() {
                Call::value_variants().to_vec()
            } else {
                args.calls
            },
            in_flight: if args.in_flight.is_empty() {
                CONCURRENCY.to_vec()
            } else {
                args.in_flight.into_iter().map(NonZeroUsize::get).collect()
            },
        }
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(EchoCommand::Serve { pki, addr, replies }) = &args.echo {
        runtime.block_on(echo::serve(pki, *addr, replies));
        return;
    }
    ensure_built();
    let settings = Settings::from(args);
    let report = runtime.block_on(measure_all(&settings));
    std::fs::create_dir_all(&settings.out).expect("output directory");
    let markdown = report.markdown();
    std::fs::write(settings.out.join("results.md"), &markdown).expect("write results.md");
    std::fs::write(settings.out.join("results.json"), report.json()).expect("write results.json");
    println!("{markdown}");
    println!("written to {}", settings.out.display());
}

/// Everything a measured platform needs: its process, channels and a grant.
pub struct Target {
    platform: Process,
    partner: SocketAddr,
    partner_channels: Vec<Channel>,
    token: String,
    thread_id: String,
}

impl Target {
    /// The platform, with a messaging client on each of the partner's connections.
    fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.partner_channels.clone(), self.platform.id())
    }

    fn credentials(&self) -> Credentials {
        Credentials {
            token: self.token.as_str().into(),
            thread_id: self.thread_id.as_str().into(),
        }
    }
}

/// Starts the baseline, replaying `replies`, with a client on each of its connections.
async fn start_echo(work: &WorkDir, replies: &Replies) -> (Process, Endpoint) {
    let replies_dir = work.path.join("replies");
    replies.save(&replies_dir);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = vec![
        "serve-echo".into(),
        work.pki("").display().to_string(),
        addr.to_string(),
        replies_dir.display().to_string(),
    ];
    let process = Process::spawn_logging("bench", &args, work.path.join("echo.log"), PLATFORM_LOG);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(channel) = work.channel(addr, Some("partner-music")).await
            && MessagingClient::new(channel)
                .list_friends(pb::ListFriendsRequest::default())
                .await
                .is_err_and(|s| s.code() == tonic::Code::PermissionDenied)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the echo baseline did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let endpoint = Endpoint::new(partner_channels(work, addr).await, process.id());
    (process, endpoint)
}

pub(crate) async fn partner_channels(work: &WorkDir, addr: SocketAddr) -> Vec<Channel> {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(
            work.channel(addr, Some("partner-music"))
                .await
                .expect("partner channel"),
        );
    }
    channels
}

/// Starts the platform process `name` on `work` with the store `database`, registers the
/// music partner, seeds a thread of 40 messages of about 200 bytes, and obtains a grant
/// without `friends.read`. Returns it with an account client of its user surface.
async fn small_target(
    work: &WorkDir,
    name: &str,
    database: &str,
) -> (Target, AccountClient<Channel>) {
    let ports = PlatformPorts::free();
    let platform =
        start_platform_named(work, name, ports, database, UNLIMITED, PLATFORM_LOG, &[]).await;
    let scopes: Vec<i32> = [
        pb::Scope::ThreadsRead,
        pb::Scope::MessagesRead,
        pb::Scope::MessagesWrite,
    ]
    .map(|s| s as i32)
    .to_vec();
    let mut operator = pb::partner_admin_client::PartnerAdminClient::new(
        work.channel(ports.operator, Some("operator"))
            .await
            .expect("operator"),
    );
    operator
        .register_partner(pb::RegisterPartnerRequest {
            partner_id: "music".into(),
            display_name: "Music".into(),
            allowed_scopes: scopes.clone(),
            features: vec![pb::Feature {
                name: "share".into(),
                description: "share".into(),
                scopes,
                retired: false,
                card_kinds: Vec::new(),
            }],
            redirect_uris: Vec::new(),
        })
        .await
        .expect("register");
    let mut account = AccountClient::new(work.channel(ports.user, None).await.expect("account"));
    let family = seed_family(&mut account).await;
    for n in 1..40 {
        let body = format!(
            "{n:03} {}",
            "a reasonably long message about dinner plans ".repeat(4)
        );
        account
            .send_message(bearer(
                pb::AccountSendMessageRequest {
                    thread_id: family.thread_id.clone(),
                    body,
                },
                &family.alice.session,
            ))
            .await
            .expect("seed message");
    }
    let channels = partner_channels(work, ports.partner).await;
    let mut consent = pb::consent_client::ConsentClient::new(channels[0].clone());
    let asked = consent
        .request_access(pb::RequestAccessRequest {
            binding_message: "1234-5678".into(),
            account_label: "the test account".into(),
            user_name: "alice".into(),
            feature: "share".into(),
            coverage: pb::ThreadCoverage::AllThreads as i32,
            include_history: true,
            purpose: "benchmark".into(),
            ..Default::default()
        })
        .await
        .expect("request")
        .into_inner();
    account
        .approve_request(bearer(
            pb::ApproveRequestRequest {
                request_id: asked.request_id.clone(),
                include_history: true,
                ..Default::default()
            },
            &family.alice.session,
        ))
        .await
        .expect("approve");
    let token = consent
        .exchange_request(pb::ExchangeRequestRequest {
            request_id: asked.request_id,
        })
        .await
        .expect("exchange")
        .into_inner()
        .grant_token;
    let target = Target {
        platform,
        partner: ports.partner,
        partner_channels: channels,
        token,
        thread_id: work.shown_to("music").thread(&family.thread_id),
    };
    (target, account)
}

fn read_request(thread_id: &str) -> pb::ListMessagesRequest {
    pb::ListMessagesRequest {
        thread_id: thread_id.into(),
        page_size: 20,
        page_token: String::new(),
    }
}

fn send_request(thread_id: &str, idempotency_key: String) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        thread_id: thread_id.into(),
        body: "x".repeat(200),
        idempotency_key,
        card: None,
    }
}

/// The calls measured, each sent the same way to the platform and to the baseline.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Call {
    Read,
    Send,
    Denied,
}

impl Call {
    fn label(self) -> &'static str {
        match self {
            Call::Read => "authorized read (20 × ~200 B)",
            Call::Send => "authorized durable send",
            Call::Denied => "denied call (scope missing)",
        }
    }
}

/// A server under load: the platform or the baseline.
struct Endpoint {
    clients: Vec<MessagingClient<Channel>>,
    pid: u32,
}

impl Endpoint {
    /// A messaging client on each of `channels`, to the server process `pid`.
    fn new(channels: Vec<Channel>, pid: u32) -> Self {
        Endpoint {
            clients: channels.into_iter().map(MessagingClient::new).collect(),
            pid,
        }
    }
}

/// What every call carries: the grant token and the thread.
#[derive(Clone)]
struct Credentials {
    token: Arc<str>,
    thread_id: Arc<str>,
}

/// Makes one call; whether it ended as the platform's reply to such a call does. A send's
/// idempotency key begins with the time, as the partner service's share ids do, followed
/// by the round, the task and the call's number within it.
async fn call_once(
    mut client: MessagingClient<Channel>,
    call: Call,
    with: &Credentials,
    (round, task, n): (usize, usize, u64),
) -> bool {
    let (token, thread_id) = (with.token.as_ref(), with.thread_id.as_ref());
    match call {
        Call::Read => client
            .list_messages(bearer(read_request(thread_id), token))
            .await
            .is_ok_and(|r| r.get_ref().messages.len() == 20),
        Call::Send => {
            let now_ms = Clock::default().now_ms();
            let key = format!("{now_ms:012x}-r{round}-t{task}-{n}");
            client
                .send_message(bearer(send_request(thread_id, key), token))
                .await
                .is_ok()
        }
        Call::Denied => client
            .list_friends(bearer(pb::ListFriendsRequest::default(), token))
            .await
            .is_err_and(|s| s.code() == tonic::Code::PermissionDenied),
    }
}

/// Keeps `concurrency` calls of `call` in flight on `endpoint` for `point`.
async fn measure(
    endpoint: &Endpoint,
    call: Call,
    with: &Credentials,
    round: usize,
    concurrency: usize,
    point: Duration,
) -> Figures {
    let with = with.clone();
    load::run(
        &endpoint.clients,
        concurrency,
        point,
        endpoint.pid,
        move |client, task, n| {
            let with = with.clone();
            async move { call_once(client, call, &with, (round, task, n)).await }
        },
    )
    .await
}

/// [`ROUNDS`] rounds of a point: each the measured call's figures right after its baseline's.
async fn rounds<B, M>(baseline: impl Fn() -> B, measured: impl Fn() -> M) -> Vec<(Figures, Figures)>
where
    B: Future<Output = Figures>,
    M: Future<Output = Figures>,
{
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let baseline = baseline().await;
        rounds.push((measured().await, baseline));
    }
    rounds
}

async fn measure_all(settings: &Settings) -> Report {
    let dir = tempfile::tempdir().expect("work directory");
    let work = WorkDir::new(dir.path());
    let sqlite = work.path.join("platform.db").display().to_string();
    let (target, account) = small_target(&work, "platform", &sqlite).await;
    let with = target.credentials();
    let replies = Replies::record(
        &mut MessagingClient::new(target.partner_channels[0].clone()),
        read_request(&target.thread_id),
        send_request(&target.thread_id, "sample".into()),
        &target.token,
    )
    .await;
    // Setup (password hashing among it) is not load: peak RSS counts from here, once the
    // hashing thread has freed its buffer (a second after its last hash).
    tokio::time::sleep(Duration::from_secs(2)).await;
    load::reset_peak_rss(target.platform.id());
    let (echo_process, echo) = start_echo(&work, &replies).await;
    let platform = target.endpoint();
    let point = settings.point;
    let mut report = Report::new(settings.quick);
    // Every send carries an idempotency key of its own, across rounds too.
    let rounds_begun = AtomicUsize::new(0);
    for &concurrency in &settings.in_flight {
        for &call in &settings.calls {
            let measured = rounds(
                || measure(&echo, call, &with, 0, concurrency, point),
                || {
                    let round = rounds_begun.fetch_add(1, Ordering::Relaxed);
                    measure(&platform, call, &with, round, concurrency, point)
                },
            )
            .await;
            report.row(Row::new(call.label(), concurrency, measured));
        }
    }
    if !settings.everything {
        report.platform_peak_rss_mib = load::peak_rss_mib(target.platform.id());
        report.evaluate();
        return report;
    }

    report.decision = Some(report::decision_latency(if settings.quick {
        50_000
    } else {
        500_000
    }));
    let disk_time = if settings.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    };
    report.fsync_commits_per_second = Some(report::fsync_rate(dir.path(), disk_time));
    report.group_commit = Some(report::group_commit_rate(dir.path(), 128, disk_time).await);
    let handshake_time = if settings.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    report.handshakes = Some(report::handshakes(&work, target.partner, handshake_time).await);
    drop(echo_process);

    // The large dataset's read is measured as the others are, in rounds, each right after
    // the same read on the small dataset, whose platform stays up for it.
    let scale_dir = tempfile::tempdir().expect("scale directory");
    let scale = report::scale_target(scale_dir.path(), settings.quick).await;
    let (large, large_with) = (scale.target.endpoint(), scale.target.credentials());
    let measured = rounds(
        || measure(&platform, Call::Read, &with, 0, 32, point),
        || measure(&large, Call::Read, &large_with, 0, 32, point),
    )
    .await;
    report.scale = Some(report::Scale {
        users: scale.users,
        messages: scale.messages,
        grants: scale.grants,
        read: Row::new(Call::Read.label(), 32, measured),
    });
    report.platform_peak_rss_mib = load::peak_rss_mib(target.platform.id())
        .max(load::peak_rss_mib(scale.target.platform.id()));
    drop(scale);
    if end_to_end::postgres::programs().is_some() {
        let on_postgres =
            replicas::measure_postgres(&work, &platform, &with, point, &rounds_begun).await;
        report.postgres = on_postgres.postgres;
        report.two_replicas = on_postgres.two_replicas;
    } else {
        eprintln!("PostgreSQL is not installed here: its points are not measured");
    }
    // Last, so that the memory a flood of sign-ups leaves with the allocator does not
    // count in the peak above.
    report.sign_in = Some(report::sign_in_under_flood(&account, 40, 5).await);
    report.evaluate();
    report
}

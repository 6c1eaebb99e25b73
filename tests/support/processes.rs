//! Real processes: the `platform-svc` and `partner-svc` binaries started on free loopback
//! ports with a development PKI in a work directory, waited on until their health checks
//! answer over TLS, and killed when dropped, so that no process outlives its owner.

use consent_proto::partner::v1::partner_app_client::PartnerAppClient;
use consent_tls::pki::DevPki;
use rustix::process::{Pid, Signal};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Trust domain of the process harness's PKI.
pub const TRUST_DOMAIN: &str = "consent.local";
/// The partners of the shipped profiles.
pub const PROFILES: &[&str] = &["music", "video", "files", "bank", "search"];

/// The shipped partner profile for `id`.
pub fn profile(id: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../partner-svc/profiles")
        .join(format!("{id}.toml"))
}

/// Builds the service binaries once per process, with the profile this program was built
/// with (`cargo test` and `cargo run` build only their own package's targets).
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "platform-svc",
            "-p",
            "partner-svc",
        ]);
        if bin_dir().ends_with("release") {
            command.arg("--release");
        }
        let status = command.status().expect("run cargo build");
        assert!(status.success(), "building the service binaries failed");
    });
}

/// The directory holding this build's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A loopback port free at the time of asking and never handed out before in this process.
/// The port is released before its user binds it, so without the record two tests running
/// side by side could be given the same one, and the second server (or Docker's port
/// mapping) would fail to bind it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Log filter (`RUST_LOG` syntax) of the processes tests start: our crates at debug, to
/// diagnose a failure from its log.
pub const TEST_LOG: &str = "info,platform_svc=debug,partner_svc=debug";

/// A child process killed on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Process {
    /// Starts `program` from this build's binaries with `args`, its output in `log`.
    pub fn spawn(program: &str, args: &[String], log: PathBuf) -> Self {
        Self::spawn_logging(program, args, log, TEST_LOG)
    }

    /// Like [`Process::spawn`], logging at `log_filter` (`RUST_LOG` syntax).
    pub fn spawn_logging(program: &str, args: &[String], log: PathBuf, log_filter: &str) -> Self {
        Self::spawn_program(&bin_dir().join(program), args, log, log_filter)
    }

    /// Starts `program` (a path, or a name looked up in `PATH`) with `args`, its output in
    /// `log`, logging at `log_filter` (`RUST_LOG` syntax).
    pub fn spawn_program(program: &Path, args: &[String], log: PathBuf, log_filter: &str) -> Self {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Process { child, log }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Asks it to stop (SIGTERM), as an orchestrator does.
    pub fn terminate(&self) {
        self.signal(Signal::TERM);
    }

    /// Sends it `signal` (`Signal::TERM`, `Signal::HUP`…).
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("signal {signal:?} to {}: {e}", self.id()));
    }

    /// Whether it has exited, and how; `None` while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("the process's status")
    }

    /// Kills it at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A work directory with a development PKI for the platform, an operator and every profile.
#[derive(Debug)]
pub struct WorkDir {
    /// The directory.
    pub path: PathBuf,
    /// The PKI written to `dev-pki`, to issue and revoke certificates with.
    pub dev_pki: DevPki,
}

impl WorkDir {
    /// What the platform of this directory shows partner `id`.
    pub fn shown_to(&self, id: &str) -> crate::ShownTo {
        crate::ShownTo::new(&self.path.join("dev-pki"), id)
    }

    /// Makes the PKI in `path/dev-pki`.
    pub fn new(path: &Path) -> Self {
        Self::with_key_owner(path, None)
    }

    /// Makes the PKI in `path/dev-pki`, its private keys owned by `key_owner` if given.
    pub fn with_key_owner(path: &Path, key_owner: Option<(u32, u32)>) -> Self {
        let partners: Vec<String> = PROFILES.iter().map(|p| p.to_string()).collect();
        let dev_pki = DevPki::generate(TRUST_DOMAIN, "ops", &partners).expect("dev pki");
        dev_pki
            .write_to(&path.join("dev-pki"), key_owner)
            .expect("write pki (keys for containers need the right to change owners)");
        crate::write_keys(&path.join("dev-pki"), key_owner);
        WorkDir {
            path: path.to_path_buf(),
            dev_pki,
        }
    }

    /// A file of the PKI.
    pub fn pki(&self, name: &str) -> PathBuf {
        self.path.join("dev-pki").join(name)
    }

    /// A TLS channel trusting both dev CAs (the platform's, and the client CA that issues
    /// partners' certificates for their own APIs), presenting `identity` (a PKI file stem
    /// such as "operator" or "partner-music") if given.
    pub async fn channel(
        &self,
        addr: SocketAddr,
        identity: Option<&str>,
    ) -> Result<Channel, tonic::transport::Error> {
        let read = |name: String| std::fs::read(self.pki(&name)).expect("pki file");
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("platform-ca.pem".into())))
            .ca_certificate(Certificate::from_pem(read("ca.pem".into())))
            .domain_name("localhost");
        if let Some(stem) = identity {
            tls = tls.identity(Identity::from_pem(
                read(format!("{stem}.pem")),
                read(format!("{stem}-key.pem")),
            ));
        }
        Channel::from_shared(format!("https://{addr}"))
            .expect("uri")
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
    }

    /// The operator's `VerifyAudit` of the whole chain, asked of the platform whose operator
    /// listener is `operator`.
    pub async fn verify_audit(
        &self,
        operator: SocketAddr,
    ) -> consent_proto::platform::v1::VerifyAuditResponse {
        let channel = self
            .channel(operator, Some("operator"))
            .await
            .expect("operator channel");
        consent_proto::platform::v1::partner_admin_client::PartnerAdminClient::new(channel)
            .verify_audit(consent_proto::platform::v1::VerifyAuditRequest::default())
            .await
            .expect("verify audit")
            .into_inner()
    }

    /// Waits until `service` on `addr` reports SERVING; `logs` says where to look if not.
    pub async fn wait_healthy(
        &self,
        addr: SocketAddr,
        identity: Option<&str>,
        service: &str,
        logs: &str,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(channel) = self.channel(addr, identity).await {
                let request = HealthCheckRequest {
                    service: service.into(),
                };
                if let Ok(response) = HealthClient::new(channel).check(request).await
                    && response.into_inner().status == 1
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{service} on {addr} did not become healthy; see {logs}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Ports of the platform's four listeners.
#[derive(Debug, Clone, Copy)]
pub struct PlatformPorts {
    /// Partner surface.
    pub partner: SocketAddr,
    /// Operator surface.
    pub operator: SocketAddr,
    /// User surface.
    pub user: SocketAddr,
    /// Web pages.
    pub web: SocketAddr,
}

impl PlatformPorts {
    /// Four free loopback ports.
    pub fn free() -> Self {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        PlatformPorts {
            partner: addr(free_port()),
            operator: addr(free_port()),
            user: addr(free_port()),
            web: addr(free_port()),
        }
    }

    /// The origin of the web pages.
    pub fn web_origin(&self) -> String {
        format!("https://localhost:{}", self.web.port())
    }
}

/// Starts `platform-svc` with its database in the work directory; waits until healthy.
pub async fn start_platform(work: &WorkDir, ports: PlatformPorts) -> Process {
    start_platform_with(work, ports, "", TEST_LOG).await
}

/// Like [`start_platform`], appending `extra` (TOML sections) to its configuration and
/// logging at `log_filter` (`RUST_LOG` syntax).
pub async fn start_platform_with(
    work: &WorkDir,
    ports: PlatformPorts,
    extra: &str,
    log_filter: &str,
) -> Process {
    let database = work.path.join("platform.db").display().to_string();
    start_platform_named(work, "platform", ports, &database, extra, log_filter, &[]).await
}

/// Like [`start_platform_with`], as the process `name` (configuration `<name>.toml`, log
/// `<name>.log` in the work directory) on the store `database` (a SQLite file's path or a
/// PostgreSQL URL), with more `flags` for `platform-svc serve`: several replicas of one
/// platform share a work directory, its PKI and keys.
pub async fn start_platform_named(
    work: &WorkDir,
    name: &str,
    ports: PlatformPorts,
    database: &str,
    extra: &str,
    log_filter: &str,
    flags: &[String],
) -> Process {
    let config = work.path.join(format!("{name}.toml"));
    let p = |name: &str| work.pki(name).display().to_string();
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"{TRUST_DOMAIN}\"\nweb_origin = \"{web_origin}\"\ndatabase = \"{db}\"\naudit_key = \"{audit_key}\"\npseudonym_key = \"{pseudonym_key}\"\n\
             [listen]\npartner = \"{}\"\noperator = \"{}\"\nuser = \"{}\"\nweb = \"{}\"\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\npartner_ca = \"{ca}\"\noperator_ca = \"{ca}\"\ncrls = [\"{}\"]\n\
             [policy]\nsweep_interval_secs = 1\n{extra}",
            ports.partner,
            ports.operator,
            ports.user,
            ports.web,
            p("platform.pem"),
            p("platform-key.pem"),
            p("crl.pem"),
            audit_key = p("audit.key"),
            pseudonym_key = p("pseudonym.key"),
            db = database,
            ca = p("ca.pem"),
            web_origin = ports.web_origin(),
        ),
    )
    .expect("platform config");
    let mut args = vec![
        "serve".into(),
        "--config".into(),
        config.display().to_string(),
    ];
    args.extend_from_slice(flags);
    let process = Process::spawn_logging(
        "platform-svc",
        &args,
        work.path.join(format!("{name}.log")),
        log_filter,
    );
    work.wait_healthy(
        ports.operator,
        Some("operator"),
        "consent.platform.v1.PartnerAdmin",
        &process.log.display().to_string(),
    )
    .await;
    process
}

/// A running partner.
#[derive(Debug)]
pub struct PartnerProcess {
    /// The process.
    pub process: Process,
    /// Its API address.
    pub addr: SocketAddr,
    /// Its web app's address.
    pub web: SocketAddr,
    /// Its own database.
    pub database: PathBuf,
}

/// The web address each partner profile gets on this machine: fixed before the partners
/// start, so that the platform can register their redirect URIs first.
pub fn partner_web_addrs() -> Vec<(&'static str, SocketAddr)> {
    PROFILES
        .iter()
        .map(|id| (*id, SocketAddr::from(([127, 0, 0, 1], free_port()))))
        .collect()
}

/// The redirect URI of a partner web app at `web`.
pub fn redirect_uri_at(web: SocketAddr) -> String {
    format!("https://localhost:{}/callback", web.port())
}

/// Starts `partner-svc` with the shipped profile of `id`, pointed at the platform, its web
/// app on a free port.
pub async fn start_partner(work: &WorkDir, id: &str, platform: PlatformPorts) -> PartnerProcess {
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    start_partner_at(work, id, platform, web).await
}

/// Like [`start_partner`], its web app on `web`.
pub async fn start_partner_at(
    work: &WorkDir,
    id: &str,
    platform: PlatformPorts,
    web: SocketAddr,
) -> PartnerProcess {
    start_partner_flagged(work, id, platform, web, &[]).await
}

/// Like [`start_partner_at`], with more `flags` for `partner-svc`.
pub async fn start_partner_flagged(
    work: &WorkDir,
    id: &str,
    platform: PlatformPorts,
    web: SocketAddr,
    flags: &[String],
) -> PartnerProcess {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let database = work.path.join(format!("{id}.db"));
    let mut args: Vec<String> = vec![
        "--config".into(),
        profile(id).display().to_string(),
        "--listen".into(),
        addr.to_string(),
        "--database".into(),
        database.display().to_string(),
        "--platform-address".into(),
        format!("https://{}", platform.partner),
        "--platform-web-origin".into(),
        platform.web_origin(),
        "--web-listen".into(),
        web.to_string(),
        "--trust-domain".into(),
        TRUST_DOMAIN.into(),
        "--tls-client-ca".into(),
        work.pki("ca.pem").display().to_string(),
        "--platform-ca".into(),
        work.pki("platform-ca.pem").display().to_string(),
        "--tls-cert".into(),
        work.pki(&format!("partner-{id}.pem")).display().to_string(),
        "--tls-key".into(),
        work.pki(&format!("partner-{id}-key.pem"))
            .display()
            .to_string(),
    ];
    args.extend_from_slice(flags);
    let process = Process::spawn("partner-svc", &args, work.path.join(format!("{id}.log")));
    work.wait_healthy(
        addr,
        None,
        "consent.partner.v1.PartnerApp",
        &process.log.display().to_string(),
    )
    .await;
    PartnerProcess {
        process,
        addr,
        web,
        database,
    }
}

impl PartnerProcess {
    /// A client of its API: one of the partner's own front ends, presenting its
    /// certificate.
    pub async fn client(&self, work: &WorkDir, id: &str) -> PartnerAppClient<Channel> {
        PartnerAppClient::new(self.channel(work, id).await)
    }

    /// A channel to its API, presenting partner `id`'s certificate.
    pub async fn channel(&self, work: &WorkDir, id: &str) -> Channel {
        work.channel(self.addr, Some(&format!("partner-{id}")))
            .await
            .expect("partner api channel")
    }
}

//! The compose stacks as test fixtures: `compose.yaml` (one platform on SQLite) or
//! `compose.replicas.yaml` (two replicas on PostgreSQL), images built once from this
//! checkout (`deploy/build-images`, `deploy/build-postgres-image`), a fresh PKI, free host
//! ports and a project name of its own, so stacks of parallel tests never meet;
//! `docker-compose down -v` on drop removes containers, networks and volumes even when the
//! test failed.

use crate::outside::{require, runs};
use crate::processes::WorkDir;
use crate::story::{PartnerData, cached_messages_of, token_of};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fails the test unless Docker and docker-compose can be used here.
pub fn require_docker() {
    require(
        runs("docker", "info") && runs("docker-compose", "version"),
        "Docker or docker-compose",
        "install Docker Engine and docker-compose",
    );
}

fn build_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| run_script("deploy/build-images"));
}

fn build_postgres_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| run_script("deploy/build-postgres-image"));
}

fn run_script(script: &str) {
    let status = Command::new(repo().join(script))
        .status()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(status.success(), "{script} failed");
}

/// The second replica of the replicated stack, on the host.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaB {
    /// Its partner listener.
    pub partner: SocketAddr,
    /// Its operator listener.
    pub operator: SocketAddr,
    /// Its user listener.
    pub user: SocketAddr,
}

/// A running compose project.
pub struct ComposeStack {
    project: String,
    file: &'static str,
    env: Vec<(String, String)>,
    /// The PKI mounted into the containers.
    pub work: WorkDir,
    /// Platform partner listener on the host.
    pub partner: SocketAddr,
    /// Platform operator listener on the host.
    pub operator: SocketAddr,
    /// Platform user listener on the host.
    pub user: SocketAddr,
    /// Platform web pages on the host.
    pub web: SocketAddr,
    /// Platform `/metrics` on the host.
    pub ops: SocketAddr,
    /// The music app's `/metrics` on the host.
    pub music_ops: SocketAddr,
    /// Partner APIs on the host, by service name.
    pub partners: Vec<(&'static str, SocketAddr)>,
    /// Partner web apps on the host, by service name.
    pub partner_webs: Vec<(&'static str, SocketAddr)>,
    /// In the replicated stack, replica B (the fields above name replica A).
    pub replica_b: Option<ReplicaB>,
    _dir: tempfile::TempDir,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl ComposeStack {
    /// Builds the images (once), starts `compose.yaml` as a project named after `name`, and
    /// waits until every service is healthy.
    pub async fn up(name: &str) -> Self {
        Self::start(name, "compose.yaml").await
    }

    /// Like [`ComposeStack::up`], with `compose.replicas.yaml`: PostgreSQL and two replicas.
    pub async fn up_replicated(name: &str) -> Self {
        build_postgres_image();
        Self::start(name, "compose.replicas.yaml").await
    }

    async fn start(name: &str, file: &'static str) -> Self {
        build_images();
        let dir = tempfile::tempdir().expect("temp dir");
        // The images run as 10001, which must be able to read the keys mounted into them.
        let work = WorkDir::with_key_owner(dir.path(), Some((10001, 10001)));
        let port = crate::processes::free_port;
        let (partner, operator, user) = (loopback(port()), loopback(port()), loopback(port()));
        let web = loopback(port());
        let (ops, music_ops) = (loopback(port()), loopback(port()));
        let services = crate::processes::PROFILES;
        let partners: Vec<_> = services.iter().map(|s| (*s, loopback(port()))).collect();
        let partner_webs: Vec<_> = services.iter().map(|s| (*s, loopback(port()))).collect();
        let mut env = vec![
            (
                "PKI_DIR".to_string(),
                work.path.join("dev-pki").display().to_string(),
            ),
            ("PLATFORM_PARTNER_PORT".into(), partner.port().to_string()),
            ("PLATFORM_OPERATOR_PORT".into(), operator.port().to_string()),
            ("PLATFORM_USER_PORT".into(), user.port().to_string()),
            ("PLATFORM_WEB_PORT".into(), web.port().to_string()),
            ("PLATFORM_OPS_PORT".into(), ops.port().to_string()),
            ("MUSIC_OPS_PORT".into(), music_ops.port().to_string()),
        ];
        for (service, addr) in &partners {
            env.push((
                format!("{}_PORT", service.to_uppercase()),
                addr.port().to_string(),
            ));
        }
        for (service, addr) in &partner_webs {
            env.push((
                format!("{}_WEB_PORT", service.to_uppercase()),
                addr.port().to_string(),
            ));
        }
        let replica_b = (file == "compose.replicas.yaml").then(|| ReplicaB {
            partner: loopback(port()),
            operator: loopback(port()),
            user: loopback(port()),
        });
        if let Some(b) = replica_b {
            let password = consent_core::secret::SecretKey::generate().to_hex();
            env.push(("POSTGRES_PASSWORD".into(), password));
            env.push((
                "PLATFORM_B_PARTNER_PORT".into(),
                b.partner.port().to_string(),
            ));
            env.push((
                "PLATFORM_B_OPERATOR_PORT".into(),
                b.operator.port().to_string(),
            ));
            env.push(("PLATFORM_B_USER_PORT".into(), b.user.port().to_string()));
            env.push(("PLATFORM_B_WEB_PORT".into(), port().to_string()));
            env.push(("PLATFORM_B_OPS_PORT".into(), port().to_string()));
        }
        let stack = ComposeStack {
            project: format!("consent-{name}-{}", std::process::id()),
            file,
            env,
            work,
            partner,
            operator,
            user,
            web,
            ops,
            music_ops,
            partners,
            partner_webs,
            replica_b,
            _dir: dir,
        };
        stack.compose(&["up", "-d"]);
        stack
            .work
            .wait_healthy(
                operator,
                Some("operator"),
                "consent.platform.v1.PartnerAdmin",
                "docker logs",
            )
            .await;
        if let Some(b) = stack.replica_b {
            let admin = "consent.platform.v1.PartnerAdmin";
            stack
                .work
                .wait_healthy(b.operator, Some("operator"), admin, "docker logs")
                .await;
        }
        for (_, addr) in &stack.partners {
            stack
                .work
                .wait_healthy(*addr, None, "consent.partner.v1.PartnerApp", "docker logs")
                .await;
        }
        stack
    }

    /// Runs `docker-compose` on this project; panics with its output if it fails.
    pub fn compose(&self, args: &[&str]) -> Output {
        let output = Command::new("docker-compose")
            .current_dir(repo())
            .args(["-p", &self.project, "-f", self.file])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run docker-compose");
        assert!(
            output.status.success(),
            "docker-compose {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The container id of `service`.
    pub fn container(&self, service: &str) -> String {
        String::from_utf8_lossy(&self.compose(&["ps", "-q", service]).stdout)
            .trim()
            .to_string()
    }

    /// The project's network.
    pub fn network(&self) -> String {
        format!("{}_consent", self.project.replace('.', ""))
    }

    /// The replicated stack's network between the replicas and the database.
    pub fn database_network(&self) -> String {
        format!("{}_db", self.project.replace('.', ""))
    }

    /// Runs `docker` with `args`; panics with its output if it fails.
    pub fn docker(&self, args: &[&str]) {
        let output = Command::new("docker")
            .args(args)
            .output()
            .expect("run docker");
        assert!(
            output.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The host address of a partner's API.
    pub fn partner_addr(&self, service: &str) -> SocketAddr {
        self.partners
            .iter()
            .find(|(s, _)| *s == service)
            .expect("partner service")
            .1
    }

    /// The origin of a partner's web app on the host.
    pub fn partner_web_origin(&self, service: &str) -> String {
        let web = self
            .partner_webs
            .iter()
            .find(|(s, _)| *s == service)
            .expect("partner service")
            .1;
        format!("https://localhost:{}", web.port())
    }

    /// The redirect URIs to register, by profile.
    pub fn redirect_uris(&self) -> Vec<(&'static str, String)> {
        self.partner_webs
            .iter()
            .map(|(id, web)| (*id, crate::processes::redirect_uri_at(*web)))
            .collect()
    }

    /// Reads a partner's store out of its container.
    pub fn partner_store(&self, service: &str) -> ContainerStore {
        ContainerStore {
            container: self.container(service),
        }
    }
}

impl Drop for ComposeStack {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .current_dir(repo())
            .args([
                "-p",
                &self.project,
                "-f",
                self.file,
                "down",
                "-v",
                "--remove-orphans",
                "--timeout",
                "3",
            ])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

/// A partner store inside a container, copied out (with its WAL) for each read.
pub struct ContainerStore {
    container: String,
}

impl ContainerStore {
    fn query<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, String> {
        let copy = tempfile::tempdir().map_err(|e| e.to_string())?;
        let copied = Command::new("docker")
            .args([
                "cp",
                &format!("{}:/data/.", self.container),
                &copy.path().display().to_string(),
            ])
            .output()
            .map_err(|e| format!("docker cp: {e}"))?;
        if !copied.status.success() {
            return Err(format!(
                "docker cp: {}",
                String::from_utf8_lossy(&copied.stderr).trim()
            ));
        }
        let db = rusqlite::Connection::open(copy.path().join("partner.db"))
            .map_err(|e| e.to_string())?;
        read(&db).map_err(|e| e.to_string())
    }
}

impl PartnerData for ContainerStore {
    fn token(&self, user: &str) -> Result<Option<String>, String> {
        self.query(|db| token_of(db, user))
    }
    fn cached_messages(&self, user: &str) -> Result<i64, String> {
        self.query(|db| cached_messages_of(db, user))
    }
}

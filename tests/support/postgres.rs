//! PostgreSQL for the tests: a server of the test process's own, from the machine's Debian
//! package (`initdb` into a temporary directory, `postgres` on a free port), started at the
//! first use and stopped when the test process ends. When the tests run as root it runs as
//! the `postgres` user, since the server refuses to run as root. Each platform gets a
//! database of its own in it ([`database`]).
//!
//! Which test binaries run their platforms on it: those whose name ends in `_on_postgres`
//! (the same test files as their SQLite twins, listed twice in `tests/Cargo.toml`), and any
//! binary run with `CONSENT_TEST_STORE=postgres`.

use crate::outside::require;
use crate::processes::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Whether this test binary's platforms run on PostgreSQL; those of a binary that asks for
/// it fail without PostgreSQL installed.
pub fn in_use() -> bool {
    let named = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| name.contains("_on_postgres-"));
    let wanted =
        named || std::env::var("CONSENT_TEST_STORE").is_ok_and(|store| store == "postgres");
    if wanted {
        require_installed();
    }
    wanted
}

/// Fails the test unless PostgreSQL is installed here.
pub fn require_installed() {
    require(
        programs().is_some(),
        "PostgreSQL",
        "apt-get install postgresql",
    );
}

/// The directory of the machine's PostgreSQL programs (the newest version installed).
pub fn programs() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists() && bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    versions.pop()
}

/// The test process's server.
pub struct Server {
    port: u16,
}

/// The server, started at the first call.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start().unwrap_or_else(|why| panic!("PostgreSQL: {why}")))
}

/// A new, empty database on the test process's server: its URL. Blocks: call it off the
/// async runtime's threads.
pub fn database() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = server();
    let name = format!("platform_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    server
        .admin()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    server.url(&name)
}

/// Runs `command` as the `postgres` user when this process is root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

impl Server {
    fn start() -> Result<Server, String> {
        let bin = programs()
            .ok_or("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")?;
        let dir = std::env::temp_dir().join(format!("consent-tests-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if is_root() {
            let owned = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status();
            if !owned.is_ok_and(|s| s.success()) {
                return Err("chown of the data directory failed".into());
            }
        }
        let data = dir.join("data");
        let init = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !init.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&init.stderr)));
        }
        let port = free_port();
        // The server lives while this process does: a watcher stops it (and removes its
        // directory) once the process is gone, however the process ends.
        let script = format!(
            "'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 \
             -c max_connections=400 -c synchronous_commit=on >'{dir}/server.log' 2>&1 & pg=$!; \
             while [ -d /proc/{parent} ]; do sleep 1; done; kill -INT $pg; wait $pg; rm -rf '{dir}'",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
            parent = std::process::id(),
        );
        as_server_user(Path::new("/bin/sh"))
            .args(["-c", &script])
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let server = Server { port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match postgres::Client::connect(&server.url("postgres"), postgres::NoTls) {
                // Another process's server could have taken the port first: check it is ours.
                Ok(mut client) => {
                    let serves: String = client
                        .query_one("SHOW data_directory", &[])
                        .map_err(|e| e.to_string())?
                        .get(0);
                    return if Path::new(&serves) == data {
                        Ok(server)
                    } else {
                        Err(format!("port {port} is another server's ({serves})"))
                    };
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => {
                    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                    return Err(format!("not up after 30 s: {e}\n{log}"));
                }
            }
        }
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A connection to the server's own database, as its administrator. Blocks: call it off
    /// the async runtime's threads.
    pub fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.url("postgres"), postgres::NoTls).expect("admin connection")
    }
}

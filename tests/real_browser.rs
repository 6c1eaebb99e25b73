//! The whole story in a real browser (Debian's Chromium, headless, driven over WebDriver by
//! fantoccini): sign up on the music app, connect, sign in on the platform, untick one
//! permission, allow, land back connected with fewer permissions, share, see the grant and
//! the call on the platform's pages, revoke there, and see the music app disconnected and
//! its copy purged. Screenshots of the consent page and of the grants page are saved under
//! the test's target directory.
//!
//! Chromium trusts exactly the two test certificates it meets (by their public keys), not
//! every certificate. A missing `chromedriver` fails the test. (Debian's `chromium-driver`
//! depends on `chromium`, so the driver's presence stands for both.)

use base64::Engine;
use end_to_end::outside::{require, runs};
use end_to_end::processes::start_partner_at;
use end_to_end::world::{eventually, partner_db, world};
use fantoccini::{Client, ClientBuilder, Locator};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A chromedriver process and the browser profile directory of its Chromium: on drop,
/// every process started with that directory (the browser, even after a failed test
/// left it open) is killed, then chromedriver.
struct Driver {
    process: Child,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        kill_processes_naming(&self.profile.path().display().to_string());
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Kills every process whose command line mentions `text`, as `pkill -KILL -f` would
/// (read from `/proc`, since slim systems have no `pkill`).
fn kill_processes_naming(text: &str) {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return;
    };
    for process in processes.flatten() {
        let pid = process.file_name().to_str().and_then(|n| n.parse().ok());
        let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) else {
            continue;
        };
        let command_line = std::fs::read(process.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&command_line).contains(text) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of the certificate in `pem_file`, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_hash(pem_file: &Path) -> String {
    let pem = std::fs::read(pem_file).expect("certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let cert = pem.parse_x509().expect("certificate");
    base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw))
}

async fn browser(trusted: &[PathBuf]) -> (Driver, Client) {
    let port = end_to_end::processes::free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        process: driver,
        profile: tempfile::tempdir().expect("browser profile"),
    };
    let spki: Vec<String> = trusted.iter().map(|p| spki_hash(p)).collect();
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1100,900",
                format!("--user-data-dir={}", driver.profile.path().display()),
                format!("--ignore-certificate-errors-spki-list={}", spki.join(",")),
            ]
        }
    });
    let capabilities = match capabilities {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object"),
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    for _ in 0..50 {
        let connected = ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        if let Ok(client) = connected {
            return (driver, client);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("chromedriver did not start a session");
}

/// The element `selector` names, waiting for the page that has it to load.
async fn element(client: &Client, selector: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
}

async fn fill(client: &Client, selector: &str, text: &str) {
    element(client, selector)
        .await
        .send_keys(text)
        .await
        .expect("type");
}

async fn click(client: &Client, selector: &str) {
    element(client, selector)
        .await
        .click()
        .await
        .expect("click");
}

async fn text_of(client: &Client, selector: &str) -> String {
    element(client, selector).await.text().await.expect("text")
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    let path = dir.join(name);
    std::fs::write(&path, client.screenshot().await.expect("screenshot")).expect("write");
    path
}

#[tokio::test]
async fn a_person_connects_the_music_app_in_chromium_and_revokes_it_on_the_platform() {
    require(
        runs("chromedriver", "--version"),
        "chromedriver",
        "apt-get install chromium chromium-driver",
    );
    let (w, _platform) = world().await;
    let music = start_partner_at(&w.work, "music", w.ports, w.music_web).await;
    let app = format!("https://localhost:{}", music.web.port());
    let platform = w.ports.web_origin();
    let (_driver, client) =
        browser(&[w.work.pki("platform.pem"), w.work.pki("partner-music.pem")]).await;

    // Sign up on the music app, then connect.
    client.goto(&format!("{app}/")).await.expect("music app");
    fill(
        &client,
        "form[action='/sign-up'] input[name='name']",
        "alice",
    )
    .await;
    fill(
        &client,
        "form[action='/sign-up'] input[name='password']",
        "correct horse",
    )
    .await;
    click(&client, "form[action='/sign-up'] button").await;
    click(&client, "form[action='/connect'] button").await;

    // The platform's own sign-in page, then its consent page.
    element(&client, "input[name='user_name']").await;
    let url = client.current_url().await.expect("url");
    assert!(
        url.as_str().starts_with(&format!("{platform}/sign-in")),
        "{url}"
    );
    fill(&client, "input[name='user_name']", "alice").await;
    fill(&client, "input[name='password']", "correct horse").await;
    click(&client, "form[action='/sign-in'] button").await;
    element(&client, "button[value='approve']").await;
    let heading = text_of(&client, "h1").await;
    assert_eq!(heading, "Music App asks for access");
    let consent_png = screenshot(&client, "consent-page.png").await;
    click(&client, "input[name='scope'][value='threads.read']").await;
    click(&client, "button[value='approve']").await;

    // Back on the music app, connected, without the permission unticked.
    element(&client, "#connection").await;
    let url = client.current_url().await.expect("url");
    assert!(
        url.as_str().starts_with(&app),
        "{url} is not on {app} (platform {platform})"
    );
    let connection = text_of(&client, "#connection").await;
    assert_eq!(connection, "Status: CONNECTED");
    let page = client.source().await.expect("source");
    assert!(
        page.contains("MESSAGES_READ") && !page.contains("THREADS_READ"),
        "{page}"
    );

    // Share a track with bob: the app starts a thread and shows it.
    let bobs_handle = w.work.shown_to("music").handle(&w.bob.id);
    fill(&client, "input[name='friend_id']", &bobs_handle).await;
    fill(&client, "input[name='body']", "Now playing: So What").await;
    click(&client, "form[action='/share'] button").await;
    let inbox = text_of(&client, "#inbox").await;
    assert!(inbox.contains("Now playing: So What"), "{inbox}");

    let cached: i64 = partner_db(&music)
        .query_row(
            "SELECT COUNT(*) FROM cached_messages WHERE user_name = 'alice'",
            [],
            |r| r.get(0),
        )
        .expect("cache");
    assert!(cached > 0, "the music app keeps a copy of what it showed");

    // The platform's pages show the grant and the call; revoke there.
    client
        .goto(&format!("{platform}/grants"))
        .await
        .expect("grants");
    let grants = text_of(&client, "main").await;
    assert!(
        grants.contains("Music App") && grants.contains("send messages as you"),
        "{grants}"
    );
    assert!(
        !grants.contains("see the list of your conversations"),
        "{grants}"
    );
    let dashboard_png = screenshot(&client, "grants-page.png").await;
    client
        .goto(&format!("{platform}/access-log"))
        .await
        .expect("access log");
    let log = text_of(&client, "#access-log").await;
    assert!(
        log.contains("StartThread") && log.contains("allowed"),
        "{log}"
    );
    client
        .goto(&format!("{platform}/grants"))
        .await
        .expect("grants");
    click(&client, "form[action$='/revoke'] button").await;
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::XPath("//td[contains(., 'revoked by you')]"))
        .await
        .expect("the grant shown revoked");

    // The music app hears of it, disconnects and purges its copy.
    eventually(
        "the music app purges alice's data",
        Duration::from_secs(20),
        async || {
            let db = partner_db(&music);
            let token: Option<String> = db
                .query_row(
                    "SELECT token FROM connections WHERE user_name = 'alice'",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(None);
            let cached: i64 = db
                .query_row(
                    "SELECT COUNT(*) FROM cached_messages WHERE user_name = 'alice'",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(-1);
            token.is_none() && cached == 0
        },
    )
    .await;
    client.goto(&format!("{app}/")).await.expect("music app");
    let connection = text_of(&client, "#connection").await;
    assert_ne!(connection, "Status: CONNECTED");
    let page = client.source().await.expect("source");
    assert!(page.contains("Connect with the platform"), "{page}");
    client.close().await.expect("close");
    for png in [consent_png, dashboard_png] {
        let bytes = std::fs::read(&png).expect("screenshot");
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
            "{}",
            png.display()
        );
    }
}

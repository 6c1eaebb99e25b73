//! A browser for the platform's web pages, as far as tests need one: HTTPS trusting the
//! platform CA, a cookie jar, and redirects left to the test so that it can read each
//! `Location`.

use crate::TestPlatform;
use crate::processes::WorkDir;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;

/// One browser: its own cookies.
pub struct Browser {
    client: reqwest::Client,
    /// `https://localhost:<web port>`, the platform's default web origin.
    pub origin: String,
}

/// A page as the browser received it.
#[derive(Debug)]
pub struct Page {
    /// Where it came from.
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// `Location`, on a redirect.
    pub location: Option<String>,
    /// Every header, for the tests of cookies and policies.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub body: String,
}

impl Page {
    /// `location` as an absolute URL: a path is taken on this page's origin.
    pub fn resolve(&self, location: &str) -> String {
        if !location.starts_with('/') {
            return location.to_string();
        }
        let after_scheme = self.url.find("://").map_or(0, |i| i + 3);
        let origin_end = self.url[after_scheme..]
            .find('/')
            .map_or(self.url.len(), |i| i + after_scheme);
        format!("{}{location}", &self.url[..origin_end])
    }

    /// The value of the hidden field `name` of the page's first form that has one, with
    /// its HTML escapes undone, as a browser would send it.
    pub fn field(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(
            self.body[start..end]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    }
}

impl Browser {
    /// A browser for `platform`'s web pages.
    pub fn new(platform: &TestPlatform) -> Self {
        Self::trusting(
            &[platform.pki.platform_ca.cert_pem()],
            format!("https://localhost:{}", platform.addrs.web.port()),
        )
    }

    /// A browser trusting the dev PKI of `work` (the platform's CA and the one that
    /// issues partners' certificates), with relative paths taken from `origin`.
    pub fn for_work(work: &WorkDir, origin: String) -> Self {
        let read = |name: &str| std::fs::read_to_string(work.pki(name)).expect("pki file");
        Self::trusting(&[&read("platform-ca.pem"), &read("ca.pem")], origin)
    }

    /// A browser trusting the CA certificates `pems`; `localhost` is 127.0.0.1 on every
    /// port.
    fn trusting(pems: &[&str], origin: String) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for pem in pems {
            let ca = CertificateDer::from_pem_slice(pem.as_bytes()).expect("CA certificate");
            roots.add(ca).expect("root");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .build()
            .expect("browser");
        Browser { client, origin }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.origin)
        }
    }

    async fn page(response: reqwest::Response) -> Page {
        let url = response.url().to_string();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.expect("body");
        Page {
            url,
            status,
            location,
            headers,
            body,
        }
    }

    /// `GET`s a path or URL.
    pub async fn get(&self, path_or_url: &str) -> Page {
        let response = self
            .client
            .get(self.url(path_or_url))
            .send()
            .await
            .expect("GET");
        Self::page(response).await
    }

    /// Sends `method` (with no body) to a path or URL with the cookie `cookie`
    /// (`name=value`), as a browser that kept one would.
    pub async fn send_with_cookie(&self, method: &str, path_or_url: &str, cookie: &str) -> Page {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = self
            .client
            .request(method, self.url(path_or_url))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .expect("request");
        Self::page(response).await
    }

    /// `GET`s a URL as a link on a page of another site would (`Sec-Fetch-Site:
    /// cross-site`).
    pub async fn get_from_another_site(&self, url: &str) -> Page {
        let response = self
            .client
            .get(self.url(url))
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .expect("GET");
        Self::page(response).await
    }

    /// `POST`s a form.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .expect("POST");
        Self::page(response).await
    }

    /// Follows redirects from `page` until a page that is not one; returns it.
    pub async fn follow(&self, mut page: Page) -> Page {
        for _ in 0..10 {
            let Some(location) = page.location.clone() else {
                return page;
            };
            page = self.get(&page.resolve(&location)).await;
        }
        panic!("too many redirects");
    }

    /// Signs in as `user_name` (password "correct horse") through the sign-in page.
    pub async fn sign_in(&self, user_name: &str) -> Page {
        let form = self.get("/sign-in").await;
        let csrf = form.field("csrf").expect("csrf field");
        self.post(
            "/sign-in",
            &[
                ("csrf", &csrf),
                ("user_name", user_name),
                ("password", "correct horse"),
                ("next", "/grants"),
            ],
        )
        .await
    }
}

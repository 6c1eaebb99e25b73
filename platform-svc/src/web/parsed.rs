//! How the platform's pages refuse a query string or form that did not parse: on a page
//! with its status and reason, as every other failure of the pages (`INVALID_ARGUMENT`,
//! naming `query` or `form`).

use super::failure;
use crate::error::ApiError;
use axum::response::Response;
use consent_tls::https::parsed::{self, MalformedPage};

/// The platform's web pages, as the site that refuses what did not parse.
#[derive(Debug)]
pub struct Site;

impl MalformedPage for Site {
    fn malformed(part: &'static str, detail: String) -> Response {
        failure(&ApiError::invalid(part, detail))
    }
}

/// A page's query string, `T`.
pub type PageQuery<T> = parsed::PageQuery<T, Site>;

/// A page's form, `T`.
pub type PageForm<T> = parsed::PageForm<T, Site>;

//! A page's query string and form, parsed as axum parses them, but refused as each site
//! refuses everything else: on its own page, with its status and reason, rather than in the
//! framework's plain text. A site says how by implementing [`MalformedPage`]; its handlers
//! take [`PageQuery`] and [`PageForm`]. A form is parsed as `axum_extra` parses it, so a
//! field of a list type may repeat (a list of checkboxes); any other field sent twice, in a
//! form or a query, does not parse. A body that is not a form at all (another content type,
//! or one over axum's 2 MB limit) is refused the same way, as a form that does not parse.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::{Form, FormRejection, WithRejection};
use std::marker::PhantomData;

/// How a site answers a query string or form that did not parse.
pub trait MalformedPage {
    /// The page refusing the `part` ("query" or "form") of a request, for `detail`: what
    /// axum found wrong.
    fn malformed(part: &'static str, detail: String) -> Response;
}

/// A page's query string, `T`, refused on the site `P`'s page.
pub type PageQuery<T, P> = WithRejection<Query<T>, Malformed<P>>;

/// A page's form, `T`, refused on the site `P`'s page.
pub type PageForm<T, P> = WithRejection<Form<T>, Malformed<P>>;

/// A query string or form that did not parse, answered with the site `P`'s page.
#[derive(Debug)]
pub struct Malformed<P>(Response, PhantomData<P>);

impl<P: MalformedPage> Malformed<P> {
    fn new(part: &'static str, detail: String) -> Self {
        Malformed(P::malformed(part, detail), PhantomData)
    }
}

impl<P: MalformedPage> From<QueryRejection> for Malformed<P> {
    fn from(rejection: QueryRejection) -> Self {
        Malformed::new("query", rejection.body_text())
    }
}

impl<P: MalformedPage> From<FormRejection> for Malformed<P> {
    fn from(rejection: FormRejection) -> Self {
        Malformed::new("form", rejection.body_text())
    }
}

impl<P> IntoResponse for Malformed<P> {
    fn into_response(self) -> Response {
        self.0
    }
}

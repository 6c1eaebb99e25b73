//! A page's query string and form, parsed as axum does, but refused as every other failure
//! of the pages is: on a page with its status and reason (`INVALID_ARGUMENT`, naming
//! `query` or `form`), not the framework's plain text.

use super::failure;
use crate::error::ApiError;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::{Form, FormRejection, WithRejection};

/// A page's query string, `T`.
pub type PageQuery<T> = WithRejection<Query<T>, Malformed>;

/// A page's form, `T`.
pub type PageForm<T> = WithRejection<Form<T>, Malformed>;

/// A query string or form that did not parse.
#[derive(Debug)]
pub struct Malformed(ApiError);

impl From<QueryRejection> for Malformed {
    fn from(rejection: QueryRejection) -> Self {
        Malformed(ApiError::invalid("query", rejection.body_text()))
    }
}

impl From<FormRejection> for Malformed {
    fn from(rejection: FormRejection) -> Self {
        Malformed(ApiError::invalid("form", rejection.body_text()))
    }
}

impl IntoResponse for Malformed {
    fn into_response(self) -> Response {
        failure(&self.0)
    }
}

//! Who calls the partner API, found once at its edge. [`CallerLayer`] reads each API
//! request's client certificate and bearer token before any handler runs and puts the
//! [`Caller`] in the request's extensions; the web app, which calls the API's handlers
//! in-process, puts in the account it signed in itself ([`as_signed_in`]). Handlers only
//! read it.

use crate::error::PartnerError;
use crate::store::PartnerStore;
use consent_core::model::{USER_NAME_RULE, is_user_name};
use consent_tls::principal::{ConnectionInfo, PartnerId, Principal};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;
use tower::{Layer, Service};

/// A caller of the partner API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// One of this partner's own front ends (its client certificate carries this
    /// partner's identity), acting for the account each call names.
    FrontEnd,
    /// A user signed in to this partner's web app, acting for that account only.
    User(String),
}

impl Caller {
    /// The caller of `request`; anyone else is refused.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Caller, PartnerError> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or(PartnerError::Unauthenticated)
    }

    /// The account a call that names `claimed` acts for: the named one for a front end
    /// (which must be an account name), the user's own for a user (who may name it, or
    /// leave it empty).
    pub fn account(&self, claimed: &str) -> Result<String, PartnerError> {
        match self {
            Caller::FrontEnd if is_user_name(claimed) => Ok(claimed.to_string()),
            Caller::FrontEnd => {
                let problem = format!("must be {USER_NAME_RULE}");
                Err(PartnerError::invalid("user_name", &problem))
            }
            Caller::User(name) if claimed.is_empty() || claimed == name => Ok(name.clone()),
            Caller::User(_) => Err(PartnerError::NotYourAccount),
        }
    }
}

/// `message` as a request of the web app's signed-in user `name`.
pub fn as_signed_in<T>(message: T, name: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .extensions_mut()
        .insert(Caller::User(name.to_string()));
    request
}

/// The partner API's edge: finds the [`Caller`] of each request to the API's service;
/// other services on the same server (health, reflection) need none.
#[derive(Debug, Clone)]
pub struct CallerLayer {
    own: Principal,
    store: PartnerStore,
    path_prefix: String,
}

impl CallerLayer {
    /// Recognises, on `service`, the front ends of `partner_id` and the sessions in
    /// `store`.
    pub fn new(service: &str, partner_id: &str, store: PartnerStore) -> Self {
        CallerLayer {
            own: Principal::Partner(PartnerId(partner_id.to_string())),
            store,
            path_prefix: format!("/{service}/"),
        }
    }

    /// Who sent `request`, as far as can be told without the store: a front end by its
    /// certificate, else the session token it presents, if any.
    fn presented<B>(&self, request: &http::Request<B>) -> Presented {
        if !request.uri().path().starts_with(&self.path_prefix) {
            return Presented::Nothing;
        }
        let principal = request
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(|c| c.principal.as_ref());
        if principal == Some(&self.own) {
            return Presented::FrontEnd;
        }
        match consent_tls::https::bearer_token_in(request.headers()) {
            Some(token) => Presented::Session(token),
            None => Presented::Nothing,
        }
    }

    /// The caller that presented `presented`, if it is one: a user by an unexpired
    /// session.
    async fn caller(&self, presented: Presented) -> Result<Option<Caller>, PartnerError> {
        match presented {
            Presented::FrontEnd => Ok(Some(Caller::FrontEnd)),
            Presented::Session(token) => {
                Ok(self.store.session_account(&token).await?.map(Caller::User))
            }
            Presented::Nothing => Ok(None),
        }
    }
}

/// What a request presents to tell who sent it.
enum Presented {
    FrontEnd,
    Session(String),
    Nothing,
}

impl<S> Layer<S> for CallerLayer {
    type Service = WithCaller<S>;

    fn layer(&self, inner: S) -> WithCaller<S> {
        WithCaller {
            inner,
            callers: self.clone(),
        }
    }
}

/// The service [`CallerLayer`] makes.
#[derive(Debug, Clone)]
pub struct WithCaller<S> {
    inner: S,
    callers: CallerLayer,
}

impl<S, B> Service<http::Request<B>> for WithCaller<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this request; its clone waits for the
        // next.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let callers = self.callers.clone();
        let presented = callers.presented(&request);
        Box::pin(async move {
            match callers.caller(presented).await {
                Ok(Some(caller)) => {
                    request.extensions_mut().insert(caller);
                }
                Ok(None) => {
                    request.extensions_mut().remove::<Caller>();
                }
                Err(error) => return Ok(Status::from(error).into_http()),
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(result: Result<String, PartnerError>) -> String {
        tonic_types::StatusExt::get_details_error_info(&Status::from(result.unwrap_err()))
            .map(|info| info.reason)
            .unwrap_or_default()
    }

    #[test]
    fn a_front_end_acts_for_the_account_it_names_and_a_user_for_their_own() {
        assert_eq!(Caller::FrontEnd.account("alice").unwrap(), "alice");
        let bad_name = Status::from(Caller::FrontEnd.account("Alice!").unwrap_err());
        assert_eq!(bad_name.code(), tonic::Code::InvalidArgument);
        assert!(bad_name.message().contains("user_name"), "{bad_name:?}");

        let alice = Caller::User("alice".into());
        assert_eq!(alice.account("").unwrap(), "alice");
        assert_eq!(alice.account("alice").unwrap(), "alice");
        assert_eq!(refusal(alice.account("bob")), "NOT_YOUR_ACCOUNT");
    }

    /// What the layer passes on for `request`: the caller it put in, or the status it
    /// answered.
    async fn seen_by_handler(
        layer: &CallerLayer,
        request: http::Request<()>,
    ) -> Result<Option<Caller>, String> {
        let handler = tower::service_fn(|request: http::Request<()>| async move {
            let caller = request.extensions().get::<Caller>().cloned();
            let mut response = http::Response::new(tonic::body::Body::empty());
            response.extensions_mut().insert(caller);
            Ok::<_, std::convert::Infallible>(response)
        });
        let response = layer.layer(handler).call(request).await.unwrap();
        match Status::from_header_map(response.headers()) {
            Some(status) => Err(status.message().to_string()),
            None => Ok(response
                .extensions()
                .get::<Option<Caller>>()
                .cloned()
                .flatten()),
        }
    }

    fn call_to(path: &str) -> http::request::Builder {
        http::Request::builder().uri(format!("https://localhost{path}"))
    }

    #[tokio::test]
    async fn the_edge_finds_front_ends_by_certificate_and_users_by_session_on_the_api_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartnerStore::open(&dir.path().join("partner.db")).unwrap();
        let hash = consent_core::secret::hash_token("sess_alice");
        store
            .run(move |tx| {
                crate::store::insert_account(tx, "alice", "a hash")?;
                crate::store::insert_session(tx, &hash, "alice", i64::MAX, 0)
            })
            .await
            .unwrap();
        let layer = CallerLayer::new("consent.partner.v1.PartnerApp", "music", store);
        let api = "/consent.partner.v1.PartnerApp/Inbox";

        let certificate = |partner: &str| ConnectionInfo {
            remote_addr: None,
            principal: Some(Principal::Partner(PartnerId(partner.into()))),
        };
        let own = call_to(api)
            .extension(certificate("music"))
            .body(())
            .unwrap();
        assert_eq!(
            seen_by_handler(&layer, own).await,
            Ok(Some(Caller::FrontEnd))
        );
        let other = call_to(api)
            .extension(certificate("bank"))
            .body(())
            .unwrap();
        assert_eq!(seen_by_handler(&layer, other).await, Ok(None));

        let bearer = |token: &str| call_to(api).header("authorization", format!("Bearer {token}"));
        let alice = bearer("sess_alice").body(()).unwrap();
        let as_alice = Some(Caller::User("alice".into()));
        assert_eq!(seen_by_handler(&layer, alice).await, Ok(as_alice));
        let unknown = bearer("sess_nobody").body(()).unwrap();
        assert_eq!(seen_by_handler(&layer, unknown).await, Ok(None));

        // Nothing outside the layer can name a caller for it.
        let forged = call_to(api).extension(Caller::FrontEnd).body(()).unwrap();
        assert_eq!(seen_by_handler(&layer, forged).await, Ok(None));
        // Health and reflection are not the API: no caller is looked for there.
        let health = call_to("/grpc.health.v1.Health/Check")
            .header("authorization", "Bearer sess_alice")
            .body(())
            .unwrap();
        assert_eq!(seen_by_handler(&layer, health).await, Ok(None));
    }

    #[test]
    fn a_request_without_a_caller_is_refused() {
        let request = tonic::Request::new(());
        let refused = Status::from(Caller::of(&request).unwrap_err());
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let reason = tonic_types::StatusExt::get_details_error_info(&refused).map(|i| i.reason);
        assert_eq!(reason.as_deref(), Some("CALLER_UNAUTHENTICATED"));
        let mine = as_signed_in((), "alice");
        assert_eq!(Caller::of(&mine).unwrap(), &Caller::User("alice".into()));
    }
}

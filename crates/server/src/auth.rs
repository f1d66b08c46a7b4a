//! Authentication: who is calling, put into request extensions as a [`Caller`].
//!
//! Providers (`AUTH_PROVIDER`): `none`/`local` (everyone is user "1"), `static`
//! (`SERVER_AUTH_TOKEN`, a comma-separated list for rotation, compared in constant time; the
//! caller is user "1"; the list can be swapped at run time with
//! [`Authenticator::replace_static_tokens`]), `supabase` (a JWT, checked locally with `SUPABASE_JWT_SECRET` or against
//! `{SUPABASE_URL}/auth/v1/user`, cached for `AUTH_CACHE_TTL`). Tokens come from
//! `Authorization: Bearer`. Without a token, a GET or HEAD of a storage route may carry a URL
//! signature instead ([`nodetool_storage::UrlSigner`]); it grants that one path and nothing else.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use nodetool_config::{AuthProvider, Settings};
use nodetool_core::{Error, ErrorKind, Result, StorageKey, UserId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

/// The single user of the `none`, `local` and `static` providers.
pub use nodetool_core::id::LOCAL_USER;

/// Who made a request; set by the auth middleware on every route except `/health` and
/// `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An authenticated user.
    User(UserId),
    /// No token, but a valid unexpired signature for exactly the requested path (GET/HEAD of a
    /// storage route only).
    SignedUrl,
}

impl Caller {
    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            Caller::User(id) => Some(id),
            Caller::SignedUrl => None,
        }
    }
}

/// The authenticated user, for handlers that need one (a signed URL is not enough).
#[derive(Debug, Clone)]
pub struct AuthUser(pub UserId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::User(id)) => Ok(AuthUser(id.clone())),
            _ => Err(ApiError::unauthorized("a bearer token is required")),
        }
    }
}

/// Why a token was refused.
#[derive(Debug)]
pub enum AuthError {
    /// Wrong, expired or malformed token: 401.
    Invalid(&'static str),
    /// The identity provider could not be asked: 503.
    Unavailable(Error),
}

/// The accepted static tokens, shared by every clone of an [`Authenticator`]. A rotation swaps
/// the whole list at once, so a check sees either the old list or the new one.
#[derive(Clone, Default)]
pub struct StaticTokens(Arc<RwLock<Arc<Vec<Vec<u8>>>>>);

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The count only: never the tokens.
        write!(f, "StaticTokens({})", self.len())
    }
}

impl StaticTokens {
    fn current(&self) -> Arc<Vec<Vec<u8>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, tokens: Vec<Vec<u8>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
    }

    pub fn len(&self) -> usize {
        self.current().len()
    }

    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }
}

/// Checks bearer tokens for the configured provider.
#[derive(Clone)]
pub enum Authenticator {
    /// `none`/`local`: no token needed, every caller is user "1".
    Local,
    /// `static`: any of these tokens is user "1".
    Static { tokens: StaticTokens },
    /// `supabase`: JWTs.
    Supabase(Arc<SupabaseAuth>),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens or secrets.
        match self {
            Authenticator::Local => f.write_str("Authenticator::Local"),
            Authenticator::Static { tokens } => {
                write!(f, "Authenticator::Static({} tokens)", tokens.len())
            }
            Authenticator::Supabase(s) => write!(
                f,
                "Authenticator::Supabase(local_jwt={}, remote={})",
                s.jwt.is_some(),
                s.remote.is_some()
            ),
        }
    }
}

/// Supabase JWT checking: locally with the project's JWT secret when it is known, else through
/// the Auth server's user endpoint, with a cache so that each token is checked once per TTL.
pub struct SupabaseAuth {
    jwt: Option<(DecodingKey, Validation)>,
    remote: Option<RemoteCheck>,
    /// sha256(token) → user id.
    cache: moka::future::Cache<[u8; 32], String>,
}

impl std::fmt::Debug for SupabaseAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupabaseAuth")
            .field("local_jwt", &self.jwt.is_some())
            .field("remote", &self.remote.as_ref().map(|r| &r.user_url))
            .finish_non_exhaustive()
    }
}

struct RemoteCheck {
    http: reqwest::Client,
    user_url: String,
    api_key: Option<String>,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

#[derive(serde::Deserialize)]
struct SupabaseUser {
    id: String,
}

impl SupabaseAuth {
    /// `jwt_secret` verifies HS256 tokens locally; otherwise `url` (the project URL) and
    /// `api_key` (sent as `apikey`) are used to ask Supabase Auth.
    pub fn new(
        jwt_secret: Option<&str>,
        url: Option<&str>,
        api_key: Option<&str>,
        cache_ttl: Duration,
    ) -> Result<Self> {
        let jwt = jwt_secret.map(|secret| {
            let mut validation = Validation::new(Algorithm::HS256);
            // Supabase user sessions carry aud "authenticated"; anon and service keys have no
            // `sub` and are refused below.
            // jsonwebtoken checks `aud` only when the token has one: require it, and `nbf`
            // when present.
            validation.set_audience(&["authenticated"]);
            validation.set_required_spec_claims(&["exp", "sub", "aud"]);
            validation.validate_nbf = true;
            (DecodingKey::from_secret(secret.as_bytes()), validation)
        });
        let remote = match (jwt.is_some(), url) {
            (false, Some(url)) => Some(RemoteCheck {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| {
                        Error::unexpected("cannot build the HTTP client")
                            .with_operation("auth.supabase.new")
                            .with_source(e)
                    })?,
                user_url: format!("{}/auth/v1/user", url.trim_end_matches('/')),
                api_key: api_key.map(str::to_owned),
            }),
            _ => None,
        };
        if jwt.is_none() && remote.is_none() {
            return Err(Error::config(
                "AUTH_PROVIDER=supabase needs SUPABASE_JWT_SECRET or SUPABASE_URL",
            )
            .with_operation("auth.supabase.new"));
        }
        Ok(Self {
            jwt,
            remote,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache_ttl.max(Duration::from_secs(1)))
                .build(),
        })
    }

    async fn authenticate(&self, token: &str) -> std::result::Result<String, AuthError> {
        if let Some((key, validation)) = &self.jwt {
            return jsonwebtoken::decode::<Claims>(token, key, validation)
                .map(|data| data.claims.sub)
                .map_err(|e| {
                    tracing::debug!(error = %e, "supabase JWT refused");
                    AuthError::Invalid("invalid or expired token")
                });
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(user) = self.cache.get(&digest).await {
            return Ok(user);
        }
        let Some(remote) = &self.remote else {
            return Err(AuthError::Invalid("invalid token"));
        };
        let mut request = remote.http.get(&remote.user_url).bearer_auth(token);
        if let Some(key) = &remote.api_key {
            request = request.header("apikey", key);
        }
        let unavailable = |e: reqwest::Error| {
            AuthError::Unavailable(
                Error::new(ErrorKind::Unavailable, "Supabase Auth did not answer")
                    .with_operation("auth.supabase.user")
                    .with_source(e),
            )
        };
        let response = request.send().await.map_err(unavailable)?;
        match response.status() {
            s if s.is_success() => {
                let user: SupabaseUser = response.json().await.map_err(unavailable)?;
                self.cache.insert(digest, user.id.clone()).await;
                Ok(user.id)
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {
                Err(AuthError::Invalid("invalid or expired token"))
            }
            s => Err(AuthError::Unavailable(
                Error::new(
                    ErrorKind::Unavailable,
                    format!("Supabase Auth answered {s}"),
                )
                .with_operation("auth.supabase.user"),
            )),
        }
    }
}

impl Authenticator {
    /// The provider `AUTH_PROVIDER` names. A provider missing its settings is a config error,
    /// never a silent fallback to no auth.
    pub fn from_settings(settings: &Settings) -> Result<Self> {
        Ok(match settings.auth_provider {
            AuthProvider::None | AuthProvider::Local => Authenticator::Local,
            AuthProvider::Static => {
                Self::static_tokens(settings.server_auth_tokens()).map_err(|e| {
                    e.with_context("setting", "SERVER_AUTH_TOKEN")
                        .with_operation("auth.from_settings")
                })?
            }
            AuthProvider::Supabase => Authenticator::Supabase(Arc::new(SupabaseAuth::new(
                settings.supabase_jwt_secret.as_deref(),
                settings.supabase_url.as_deref(),
                settings.supabase_key.as_deref(),
                settings.auth_cache_ttl,
            )?)),
        })
    }

    /// The `static` provider with these tokens (at least one, none empty).
    pub fn static_tokens<S: AsRef<str>>(tokens: impl IntoIterator<Item = S>) -> Result<Self> {
        let list = StaticTokens::default();
        list.replace(token_list(tokens)?);
        Ok(Authenticator::Static { tokens: list })
    }

    /// Rotates the `static` provider's tokens in place: every clone of this authenticator (the
    /// router's, the WebSockets') accepts exactly `tokens` from the next request on. An empty
    /// list is refused (`ConfigInvalid`) and the current tokens stay, so a half-written secrets
    /// file cannot lock everyone out; other providers answer `Unsupported`.
    pub fn replace_static_tokens<S: AsRef<str>>(
        &self,
        tokens: impl IntoIterator<Item = S>,
    ) -> Result<()> {
        match self {
            Authenticator::Static { tokens: list } => {
                list.replace(token_list(tokens)?);
                Ok(())
            }
            _ => Err(Error::new(
                ErrorKind::Unsupported,
                "only AUTH_PROVIDER=static has tokens to replace",
            )
            .with_operation("auth.replace_static_tokens")),
        }
    }

    /// True when every authenticated caller is the same user, so the whole store is theirs.
    pub fn is_single_user(&self) -> bool {
        matches!(self, Authenticator::Local | Authenticator::Static { .. })
    }

    /// Which storage keys a caller owns: the rule every storage route applies, and the one
    /// jobs get (`nodetool_core::KeyScope`).
    pub fn key_scope(&self) -> nodetool_core::KeyScope {
        nodetool_core::KeyScope::for_auth(!self.is_single_user())
    }

    /// True when a token is needed at all.
    pub fn requires_token(&self) -> bool {
        !matches!(self, Authenticator::Local)
    }

    /// The user a bearer token belongs to.
    pub async fn authenticate(&self, token: &str) -> std::result::Result<UserId, AuthError> {
        match self.authenticate_here(token) {
            Some(answer) => answer,
            None => match self {
                Authenticator::Supabase(s) => usable_user(s.authenticate(token).await?),
                // `authenticate_here` answers for every other provider.
                Authenticator::Local | Authenticator::Static { .. } => {
                    Err(AuthError::Invalid("invalid token"))
                }
            },
        }
    }

    /// [`Authenticator::authenticate`] when it needs no I/O (every provider but Supabase's
    /// remote check), so the middleware answers without a boxed future; `None` otherwise.
    fn authenticate_here(&self, token: &str) -> Option<std::result::Result<UserId, AuthError>> {
        match self {
            Authenticator::Local => Some(Ok(UserId::local())),
            Authenticator::Static { tokens } => {
                // Compare against every token so the time taken does not tell which one
                // (or whether any) matched.
                let tokens = tokens.current();
                let mut ok = subtle::Choice::from(0);
                for t in tokens.iter() {
                    ok |= t.as_slice().ct_eq(token.as_bytes());
                }
                Some(if bool::from(ok) {
                    Ok(UserId::local())
                } else {
                    Err(AuthError::Invalid("invalid token"))
                })
            }
            Authenticator::Supabase(_) => None,
        }
    }
}

/// A provider's user id, if it can be one here.
fn usable_user(user: String) -> std::result::Result<UserId, AuthError> {
    // The user id becomes the first segment of the user's storage keys.
    if user.contains('/') || StorageKey::new(user.as_str()).is_err() {
        tracing::warn!("identity provider returned a user id that is not a valid key segment");
        return Err(AuthError::Invalid("unusable user id"));
    }
    // `jobs/...` are other jobs' temp objects: a user called "jobs" must not own them.
    if nodetool_core::storage::RESERVED_USER_IDS
        .iter()
        .any(|r| user.eq_ignore_ascii_case(r))
    {
        tracing::warn!(user = %user, "identity provider returned a reserved user id; refused");
        return Err(AuthError::Invalid("unusable user id (reserved)"));
    }
    Ok(UserId::new(user))
}

/// The non-empty tokens as bytes; an empty result is a config error.
fn token_list<S: AsRef<str>>(tokens: impl IntoIterator<Item = S>) -> Result<Vec<Vec<u8>>> {
    let tokens: Vec<Vec<u8>> = tokens
        .into_iter()
        .map(|t| t.as_ref().as_bytes().to_vec())
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return Err(Error::config(
            "AUTH_PROVIDER=static needs SERVER_AUTH_TOKEN (one token or a comma-separated list)",
        ));
    }
    Ok(tokens)
}

/// Paths that answer without auth.
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/metrics")
}

/// The user behind a WebSocket upgrade that must present a token: `Authorization: Bearer`, or
/// `?api_key=` (browsers cannot set headers on a WebSocket). `Err` is the response to send:
/// 401, or the provider's failure when it cannot be reached.
pub(crate) async fn websocket_user(
    auth: &Authenticator,
    headers: &HeaderMap,
    api_key: Option<String>,
) -> std::result::Result<UserId, Response> {
    let token = bearer(headers)
        .map(str::to_owned)
        .or(api_key.filter(|k| !k.is_empty()));
    let Some(token) = token else {
        return Err(ApiError::unauthorized("missing bearer token or api_key").into_response());
    };
    match auth.authenticate(&token).await {
        Ok(user) => Ok(user),
        Err(AuthError::Invalid(why)) => Err(ApiError::unauthorized(why).into_response()),
        Err(AuthError::Unavailable(e)) => Err(ApiError::from(e).into_response()),
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The decoded path a URL signature covers: `/storage/...` aliases are checked as
/// `/api/storage/...`, which is what storage URLs are built with. Public for the fuzz targets.
pub fn signed_path(raw_path: &str) -> Option<String> {
    let path = nodetool_storage::signing::decoded_path(raw_path);
    if path.starts_with("/api/storage/") {
        Some(path)
    } else {
        path.strip_prefix("/storage/")
            .map(|rest| format!("/api/storage/{rest}"))
    }
}

fn signature_params(query: &str) -> Option<(String, String)> {
    let mut expires = None;
    let mut sig = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("expires", v)) => expires = Some(v.to_owned()),
            Some(("sig", v)) => sig = Some(v.to_owned()),
            _ => {}
        }
    }
    Some((expires?, sig?))
}

/// Sets [`Caller`] on every request but `/health`, `/metrics` and preflights, or answers 401
/// (503 when the identity provider is down). A hand-written layer, not `from_fn`: only a
/// token that must be checked remotely costs a boxed future.
#[derive(Clone)]
pub(crate) struct AuthLayer {
    state: AppState,
}

impl AuthLayer {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Clone)]
pub(crate) struct Authenticate<S> {
    inner: S,
    state: AppState,
}

type BoxedResponse =
    Pin<Box<dyn Future<Output = std::result::Result<Response, Infallible>> + Send>>;

impl<S> tower::Service<Request> for Authenticate<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if is_public(req.uri().path()) || req.method() == Method::OPTIONS {
            return AuthFuture::Routed {
                inner: self.inner.call(req),
            };
        }
        let caller = match (&self.state.auth, bearer(req.headers())) {
            (Authenticator::Local, _) => Ok(Caller::User(UserId::local())),
            (auth, Some(token)) => match auth.authenticate_here(token) {
                Some(answer) => answer.map(Caller::User).map_err(refusal),
                None => {
                    // Remote: the service that was made ready goes into the future, a clone
                    // stays (tower's rule for services called after an await).
                    let auth = auth.clone();
                    let token = token.to_owned();
                    let clone = self.inner.clone();
                    let mut inner = std::mem::replace(&mut self.inner, clone);
                    return AuthFuture::Remote {
                        inner: Box::pin(async move {
                            match auth.authenticate(&token).await {
                                Ok(user) => {
                                    req.extensions_mut().insert(Caller::User(user));
                                    inner.call(req).await
                                }
                                Err(e) => Ok(refusal(e)),
                            }
                        }),
                    };
                }
            },
            (_, None) => match signed_caller(&self.state, &req) {
                Some(Ok(())) => Ok(Caller::SignedUrl),
                Some(Err(e)) => Err(ApiError::unauthorized(format!("{e}")).into_response()),
                None => Err(ApiError::unauthorized("missing bearer token").into_response()),
            },
        };
        match caller {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                AuthFuture::Routed {
                    inner: self.inner.call(req),
                }
            }
            Err(response) => AuthFuture::Refused {
                answer: std::future::ready(Ok(response)),
            },
        }
    }
}

fn refusal(e: AuthError) -> Response {
    match e {
        AuthError::Invalid(why) => ApiError::unauthorized(why).into_response(),
        AuthError::Unavailable(e) => ApiError::from(e).into_response(),
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Authenticate`].
    #[project = AuthProj]
    pub(crate) enum AuthFuture<F> {
        Routed { #[pin] inner: F },
        Refused { #[pin] answer: Ready<std::result::Result<Response, Infallible>> },
        Remote { inner: BoxedResponse },
    }
}

impl<F> Future for AuthFuture<F>
where
    F: Future<Output = std::result::Result<Response, Infallible>>,
{
    type Output = std::result::Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthProj::Routed { inner } => inner.poll(cx),
            AuthProj::Refused { answer } => answer.poll(cx),
            AuthProj::Remote { inner } => inner.as_mut().poll(cx),
        }
    }
}

/// `None` when the request carries no signature it could use; else the verification result.
fn signed_caller(
    state: &AppState,
    req: &Request,
) -> Option<std::result::Result<(), nodetool_storage::signing::SignatureError>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let signer = state.signer.as_ref()?;
    let (expires, sig) = signature_params(req.uri().query()?)?;
    let path = signed_path(req.uri().path())?;
    Some(signer.verify(&path, &expires, &sig, chrono::Utc::now()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_tokens_rotate_in_place_for_every_clone() {
        let auth = Authenticator::static_tokens(["old"]).unwrap();
        let shared = auth.clone();
        assert!(shared.authenticate("old").await.is_ok());

        auth.replace_static_tokens(["new", "next"]).unwrap();
        assert!(shared.authenticate("old").await.is_err());
        assert!(shared.authenticate("new").await.is_ok());
        assert!(shared.authenticate("next").await.is_ok());
        assert_eq!(format!("{shared:?}"), "Authenticator::Static(2 tokens)");

        // An empty list is refused and the current tokens stay.
        let err = auth
            .replace_static_tokens(["", " "].map(str::trim))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(shared.authenticate("new").await.is_ok());

        let err = Authenticator::Local
            .replace_static_tokens(["x"])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }
}

//! OAuth login: `/auth/{provider}`, `/auth/{provider}/callback` and, on a
//! first login, `/auth/choose-username`.
//!
//! 1. `GET /auth/{provider}?next=/path` keeps a [`PendingFlow`] (random
//!    `state`, PKCE verifier, redirect URI, `next`) in the session under
//!    `oauth_flow:{provider}` and sends the browser (303) to the provider.
//! 2. `GET /auth/{provider}/callback?code=..&state=..` takes that flow out of
//!    the session (single use, whatever the outcome), refuses (403) a `state`
//!    that is not the one kept, shows the provider's `error=` (400), exchanges
//!    the code and reads the userinfo (`accounts::oauth`). A known identity is
//!    logged in (new session id) and sent to `next`; a new one is kept in the
//!    session as a [`PendingSignup`] and sent to `/auth/choose-username`.
//! 3. `POST /auth/choose-username` (CSRF-checked) creates the account with the
//!    chosen name, logs it in and sends it to `next`; a taken or invalid name
//!    shows the form again with the reason.
//!
//! The redirect URI is `{public_url}/auth/{provider}/callback`. Without a
//! configured `public_url` it is made from the request (the app's scheme and
//! the `Host` header) only when that host is a loopback one (`localhost`,
//! `127.0.0.0/8`, `::1`: a developer's machine, tests on port 0); any other
//! `Host` is the client's word, so sign-in then answers 503 asking for
//! `public_url`. Production sets `public_url` (and registers exactly that
//! callback with the provider); forwarded headers are not trusted here. The
//! URI is kept in the flow, so the token request sends the same one as the
//! authorization request.
//!
//! Errors in the flow are pages (the user is in a browser), with the status
//! that fits: 404 unknown provider, 400 provider error or bad request, 403
//! state mismatch, 502 the provider's endpoints failed.

use actix_session::Session;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::errors::ApiError;
use super::pages::Nav;
use super::session::{self, MaybeUser, check_csrf};
use crate::accounts::AccountError;
use crate::accounts::oauth::{FlowError, ProviderConfig};

/// The session key of a started flow (one per provider).
fn flow_key(provider: &str) -> String {
    format!("oauth_flow:{provider}")
}

/// The session key of a first login waiting for a username.
const SIGNUP_KEY: &str = "oauth_signup";

/// What `/auth/{provider}` keeps for the callback.
#[derive(Debug, Serialize, Deserialize)]
struct PendingFlow {
    provider: String,
    state: String,
    pkce_verifier: String,
    redirect_uri: String,
    next: String,
}

/// A verified identity without an account yet.
#[derive(Debug, Serialize, Deserialize)]
struct PendingSignup {
    provider: String,
    subject: String,
    email: Option<String>,
    suggested_username: String,
    next: String,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    // `choose-username` first: provider names never contain '-', but the
    // literal route must win over `{provider}` anyway.
    cfg.route("/auth/choose-username", web::get().to(choose_username_page))
        .route(
            "/auth/choose-username",
            web::post().to(choose_username_form),
        )
        .route("/auth/{provider}", web::get().to(start))
        .route("/auth/{provider}/callback", web::get().to(callback));
}

/// `choose_username.html`: the username form, or (without `form`) a message
/// that the sign-in failed.
#[derive(Template)]
#[template(path = "choose_username.html")]
struct ChooseUsernamePage<'a> {
    nav: Nav,
    /// Show the form (else only the error and a way back).
    form: bool,
    provider: &'a str,
    username: &'a str,
    error: Option<String>,
    next: &'a str,
}

fn render(page: ChooseUsernamePage<'_>, status: StatusCode) -> Result<HttpResponse, ApiError> {
    let html = page.render().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(html))
}

/// A page saying the sign-in failed and why.
fn failure(
    session: &Session,
    status: StatusCode,
    provider: &str,
    message: impl Into<String>,
) -> Result<HttpResponse, ApiError> {
    render(
        ChooseUsernamePage {
            nav: Nav::anonymous(session),
            form: false,
            provider,
            username: "",
            error: Some(message.into()),
            next: "/",
        },
        status,
    )
}

/// The shared rule of `account.rs`: local paths only.
fn safe_next(next: Option<&str>) -> String {
    super::account::safe_next(next).to_string()
}

fn session_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("session: {e}"))
}

fn provider<'a>(state: &'a AppState, name: &str) -> Option<&'a ProviderConfig> {
    state.oauth.iter().find(|p| p.name == name)
}

/// Whether `host` (`name[:port]`) names this machine's loopback interface.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `{public_url}/auth/{provider}/callback`, or from the request when no
/// `public_url` is configured and the request's host is a loopback one;
/// `None` otherwise (see the module doc).
fn redirect_uri(state: &AppState, req: &HttpRequest, provider: &str) -> Option<String> {
    let base = match &state.config.configured_public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let scheme = if req.app_config().secure() {
                "https"
            } else {
                "http"
            };
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@', ' ']))
                .map(str::to_string)
                .unwrap_or_else(|| req.app_config().host().to_string());
            if !is_loopback_host(&host) {
                return None;
            }
            format!("{scheme}://{host}")
        }
    };
    Some(format!("{base}/auth/{provider}/callback"))
}

#[derive(Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /auth/{provider}`: off to the provider.
async fn start(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
    q: web::Query<StartQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let Some(p) = provider(&state, &name) else {
        return failure(
            &session,
            StatusCode::NOT_FOUND,
            &name,
            format!("there is no sign-in provider called {name:?} here"),
        );
    };
    let Some(redirect_uri) = redirect_uri(&state, &req, &p.name) else {
        tracing::warn!(
            provider = %p.name,
            "OAuth sign-in refused: public_url is not set and the request's host is not local"
        );
        return failure(
            &session,
            StatusCode::SERVICE_UNAVAILABLE,
            &name,
            "sign-in with this provider needs the server's public_url to be configured",
        );
    };
    let auth = p.authorize(&redirect_uri).map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context(format!("oauth provider {}", p.name)))
    })?;
    let flow = PendingFlow {
        provider: p.name.clone(),
        state: auth.state,
        pkce_verifier: auth.pkce_verifier,
        redirect_uri,
        next: safe_next(q.next.as_deref()),
    };
    session
        .insert(flow_key(&p.name), &flow)
        .map_err(session_error)?;
    tracing::debug!(provider = %p.name, "oauth sign-in started");
    Ok(super::see_other(auth.url.as_str()))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /auth/{provider}/callback`: the provider sends the browser back.
async fn callback(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
    q: web::Query<CallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let Some(p) = provider(&state, &name) else {
        return failure(
            &session,
            StatusCode::NOT_FOUND,
            &name,
            format!("there is no sign-in provider called {name:?} here"),
        );
    };
    let shown = p.display_name.as_str();
    // Single use: whatever happens next, this flow is over.
    let flow = session
        .remove_as::<PendingFlow>(&flow_key(&p.name))
        .and_then(Result::ok);
    if let Some(error) = &q.error {
        let mut msg = format!("{shown} did not sign you in ({error})");
        if let Some(d) = q.error_description.as_deref().filter(|d| !d.is_empty()) {
            msg = format!("{msg}: {d}");
        }
        tracing::info!(provider = %p.name, %error, "oauth provider returned an error");
        return failure(&session, StatusCode::BAD_REQUEST, shown, msg);
    }
    let flow = match (flow, q.state.as_deref()) {
        (Some(f), Some(given))
            if f.provider == p.name
                && crate::secrets::same_secret(f.state.as_bytes(), given.as_bytes()) =>
        {
            f
        }
        (None, _) => {
            tracing::warn!(provider = %p.name, "oauth callback without a started sign-in");
            return failure(
                &session,
                StatusCode::FORBIDDEN,
                shown,
                format!(
                    "OAuth state mismatch: no sign-in with {shown} was started in this browser, or it was already used. Start again from the login page."
                ),
            );
        }
        (Some(_), _) => {
            tracing::warn!(provider = %p.name, "oauth callback with a wrong state");
            return failure(
                &session,
                StatusCode::FORBIDDEN,
                shown,
                "OAuth state mismatch: this sign-in answer does not belong to this browser's sign-in. Start again from the login page.",
            );
        }
    };
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return failure(
            &session,
            StatusCode::BAD_REQUEST,
            shown,
            format!("{shown} sent no sign-in code back"),
        );
    };
    let identity = match p
        .identify(&flow.redirect_uri, code, &flow.pkce_verifier)
        .await
    {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(provider = %p.name, error = %e, "oauth sign-in failed");
            let status = match e {
                FlowError::TokenRefused(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            return failure(
                &session,
                status,
                shown,
                format!("Signing in with {shown} failed: {e}"),
            );
        }
    };
    if let Some(user) = state
        .accounts
        .by_identity(&p.name, &identity.subject)
        .await?
    {
        session::log_in(&session, &user)?;
        tracing::info!(provider = %p.name, user = %user.username, "oauth login");
        return Ok(super::see_other(&flow.next));
    }
    let signup = PendingSignup {
        provider: p.name.clone(),
        subject: identity.subject,
        email: identity.email,
        suggested_username: identity.suggested_username,
        next: flow.next,
    };
    session.insert(SIGNUP_KEY, &signup).map_err(session_error)?;
    Ok(super::see_other("/auth/choose-username"))
}

fn pending_signup(session: &Session) -> Option<PendingSignup> {
    session.get::<PendingSignup>(SIGNUP_KEY).ok().flatten()
}

fn display_name<'a>(state: &'a AppState, provider: &'a str) -> &'a str {
    self::provider(state, provider)
        .map(|p| p.display_name.as_str())
        .unwrap_or(provider)
}

fn no_signup(session: &Session) -> Result<HttpResponse, ApiError> {
    failure(
        session,
        StatusCode::BAD_REQUEST,
        "",
        "No sign-up is in progress (it may have expired). Start again from the login page.",
    )
}

/// `GET /auth/choose-username`: the form of a first OAuth login.
async fn choose_username_page(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    let Some(signup) = pending_signup(&session) else {
        return no_signup(&session);
    };
    render(
        ChooseUsernamePage {
            nav: Nav::with_form(&session, &user),
            form: true,
            provider: display_name(&state, &signup.provider),
            username: &signup.suggested_username,
            error: None,
            next: &signup.next,
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize)]
pub struct ChooseUsernameForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    csrf: Option<String>,
}

/// `POST /auth/choose-username`: the account is made and logged in.
async fn choose_username_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
    form: web::Form<ChooseUsernameForm>,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&session, form.csrf.as_deref())?;
    let Some(signup) = pending_signup(&session) else {
        return no_signup(&session);
    };
    // A new account: the same per-IP limit as the other sign-up routes.
    super::account::limit_signup(&state, &req).await?;
    let created = state
        .accounts
        .register_oauth(
            &form.username,
            &signup.provider,
            &signup.subject,
            signup.email.clone(),
        )
        .await;
    let account = match created {
        Ok(u) => u,
        Err(e @ (AccountError::UsernameTaken(_) | AccountError::InvalidUsername(_))) => {
            let err = ApiError::from(e);
            let status = actix_web::ResponseError::status_code(&err);
            return render(
                ChooseUsernamePage {
                    nav: Nav::with_form(&session, &user),
                    form: true,
                    provider: display_name(&state, &signup.provider),
                    username: form.username.trim(),
                    error: Some(err.to_string()),
                    next: &signup.next,
                },
                status,
            );
        }
        Err(e) => {
            // A double submit: the identity was linked meanwhile.
            match state
                .accounts
                .by_identity(&signup.provider, &signup.subject)
                .await?
            {
                Some(u) => u,
                None => return Err(e.into()),
            }
        }
    };
    session::log_in(&session, &account)?;
    tracing::info!(provider = %signup.provider, user = %account.username, "oauth account created");
    Ok(super::see_other(&signup.next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_make_a_redirect_uri_without_public_url() {
        assert!(is_loopback_host("127.0.0.1:8080"));
        assert!(is_loopback_host("localhost:3000"));
        assert!(is_loopback_host("[::1]:8080"));
        assert!(is_loopback_host("localhost"));
        assert!(!is_loopback_host("evil.example"));
        assert!(!is_loopback_host("evil.example:8080"));
        assert!(!is_loopback_host("10.0.0.1:80"));
        assert!(!is_loopback_host("[2001:db8::1]:80"));
    }

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(safe_next(Some("/s/alice")), "/s/alice");
        assert_eq!(safe_next(Some("//evil.example")), "/studio");
        assert_eq!(safe_next(Some("https://evil.example")), "/studio");
        assert_eq!(safe_next(Some("/\\evil.example")), "/studio");
        assert_eq!(safe_next(None), "/studio");
        assert_eq!(
            safe_next(Some("/\t/evil.example")),
            "/studio",
            "browsers drop the tab"
        );
        assert_eq!(safe_next(Some("/a\nb")), "/studio");
    }
}

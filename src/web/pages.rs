//! Server-rendered pages (askama).

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use askama_web::WebTemplate;
use dreamstream_actors::Username;
use dreamstream_actors::presets;

use actix_session::Session;

use super::AppState;
use super::errors::ApiError;
use super::session::{MaybeUser, csrf_token};
use dreamstream_actors::presets::style_name;

/// What the top bar needs: who is logged in and the CSRF token of the logout form.
pub struct Nav {
    pub user: Option<String>,
    pub is_admin: bool,
    pub csrf: String,
}

impl Nav {
    /// For pages whose only forms are for logged-in users: anonymous viewers
    /// get no token, so watching never creates a session (or a Redis entry).
    pub fn new(session: &Session, user: &MaybeUser) -> Self {
        let csrf = if user.0.is_some() {
            csrf_token(session)
        } else {
            String::new()
        };
        Self::build(user, csrf)
    }

    /// For pages with a form anyone may post (login, register, choose a username).
    pub fn with_form(session: &Session, user: &MaybeUser) -> Self {
        Self::build(user, csrf_token(session))
    }

    pub fn anonymous(session: &Session) -> Self {
        Self::with_form(session, &MaybeUser(None))
    }

    fn build(user: &MaybeUser, csrf: String) -> Self {
        Self {
            user: user.0.as_ref().map(|u| u.username.to_string()),
            is_admin: user.0.as_ref().is_some_and(|u| u.is_admin),
            csrf,
        }
    }
}

/// A styled error page (403, 404, ...) with the site's header.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub nav: Nav,
    pub code: u16,
    pub title: String,
    pub message: String,
    /// A second way out besides "See who is live": (href, label).
    pub action: Option<(String, String)>,
}

impl ErrorPage {
    pub fn response(&self) -> HttpResponse {
        let status = actix_web::http::StatusCode::from_u16(self.code)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        match self.render() {
            Ok(body) => HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .body(body),
            Err(e) => {
                tracing::error!(error = %e, "the error page did not render");
                HttpResponse::build(status).finish()
            }
        }
    }
}

/// Whether the client wants a page rather than JSON (`Accept: text/html`,
/// outside `/api/`).
fn wants_html(req: &HttpRequest) -> bool {
    !req.path().starts_with("/api/")
        && req
            .headers()
            .get(actix_web::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// Every address no route matches: a styled 404 page for browsers, the
/// usual JSON error for API clients.
pub async fn not_found(req: HttpRequest, session: Session, user: MaybeUser) -> HttpResponse {
    if !wants_html(&req) {
        return actix_web::ResponseError::error_response(&ApiError::NotFound(
            "no such page".into(),
        ));
    }
    ErrorPage {
        nav: Nav::new(&session, &user),
        code: 404,
        title: "Page not found".into(),
        message: "There is nothing at this address. The link may be old, or mistyped.".into(),
        action: None,
    }
    .response()
}

/// The favicon (browsers ask for `/favicon.ico` whatever the page says).
pub async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "public, max-age=86400",
        ))
        .body(include_str!("../../templates/static/favicon.svg"))
}

fn html(page: impl Template) -> Result<HttpResponse, ApiError> {
    let body = page.render().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body))
}

pub struct LiveCard {
    pub username: String,
    pub viewers: usize,
    pub style: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
pub struct Home {
    pub nav: Nav,
    pub live: Vec<LiveCard>,
}

#[derive(Template, WebTemplate)]
#[template(path = "studio.html")]
pub struct Studio {
    pub nav: Nav,
    pub username: String,
    pub balance: i64,
    pub period_minutes: u64,
    pub has_key: bool,
    pub switches: dreamstream_actors::stream::community::CommunitySettings,
    pub presets: Vec<(usize, &'static str)>,
    pub default_style: usize,
    pub max_frame_bytes: usize,
}

#[derive(Template, WebTemplate)]
#[template(path = "watch.html")]
pub struct Watch {
    pub nav: Nav,
    pub presets: Vec<(usize, &'static str)>,
    pub comments_open: bool,
    pub requests_open: bool,
    /// The streamer's switches themselves (the page opens the chat with them
    /// when the channel goes live).
    pub switches_comments: bool,
    pub switches_requests: bool,
    pub username: String,
    pub live: bool,
    /// Live with its broadcaster connected (not in a reconnect).
    pub broadcaster: bool,
    pub viewers: usize,
    pub style: String,
}

pub async fn home(state: web::Data<AppState>, session: Session, user: MaybeUser) -> Home {
    let live = state
        .control
        .list()
        .await
        .iter()
        .map(|s| LiveCard {
            username: s.username.to_string(),
            viewers: s.viewer_count(),
            style: style_name(&s.settings()),
        })
        .collect();
    Home {
        nav: Nav::new(&session, &user),
        live,
    }
}

pub async fn studio(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    let Some(me) = user.0.clone() else {
        return Ok(HttpResponse::SeeOther()
            .insert_header((actix_web::http::header::LOCATION, "/login?next=/studio"))
            .finish());
    };
    let default = state.config.default_style.clone();
    let default_style = match &default.source {
        dreamstream_actors::StyleSource::Preset { mix } => mix.dominant(),
        _ => 0,
    };
    html(Studio {
        nav: Nav::new(&session, &user),
        username: me.username.to_string(),
        balance: state.accounts.balance(me.id).await?,
        period_minutes: state.config.credits.period_minutes,
        has_key: crate::accounts::keys::exists(state.accounts.db(), me.id).await?,
        switches: crate::community::load_settings(state.accounts.db(), me.id).await?,
        presets: presets::NAMES.iter().copied().enumerate().collect(),
        default_style,
        max_frame_bytes: state.config.stream.max_frame_bytes,
    })
}

pub async fn watch(
    path: web::Path<String>,
    state: web::Data<AppState>,
    session: Session,
    me: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    let unknown = |name: &str| {
        ErrorPage {
            nav: Nav::new(&session, &me),
            code: 404,
            title: "No such channel".into(),
            message: format!(
                "Nobody streams as \u{201c}{name}\u{201d} here. Channels are named after their streamer's username."
            ),
            action: Some(("/register".into(), "Create your own channel".into())),
        }
        .response()
    };
    let Ok(user) = Username::parse(&path) else {
        let shown: String = path.chars().take(40).collect();
        return Ok(unknown(&shown));
    };
    if state.accounts.find(&user).await?.is_none() {
        return Ok(unknown(user.as_str()));
    }
    let stream = state.control.get(&user).await;
    let switches = stream
        .as_ref()
        .map(|s| s.community.settings())
        .unwrap_or_default();
    let page = Watch {
        nav: Nav::new(&session, &me),
        presets: presets::NAMES.iter().copied().enumerate().collect(),
        comments_open: stream.is_some() && switches.comments,
        switches_comments: switches.comments,
        switches_requests: switches.requests,
        requests_open: stream.is_some() && switches.requests,
        username: user.to_string(),
        live: stream.is_some(),
        broadcaster: stream.as_ref().is_some_and(|s| s.broadcaster_connected()),
        viewers: stream.as_ref().map_or(0, |s| s.viewer_count()),
        style: stream
            .as_ref()
            .map(|s| style_name(&s.settings()))
            .unwrap_or_default(),
    };
    html(page)
}

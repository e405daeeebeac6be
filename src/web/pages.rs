//! Server-rendered pages (askama).

use actix_web::{HttpResponse, web};
use askama::Template;
use askama_web::WebTemplate;
use dreamstream_actors::Username;
use gpu_node::neural_style::presets;

use actix_session::Session;

use super::AppState;
use super::api::style_name;
use super::errors::ApiError;
use super::session::{MaybeUser, csrf_token};

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
    pub username: String,
    pub live: bool,
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
    let default = state.settings.default_style().map_err(ApiError::Internal)?;
    let default_style = match &default.source {
        dreamstream_actors::StyleSource::Preset { mix } => mix.dominant(),
        _ => 0,
    };
    html(Studio {
        nav: Nav::new(&session, &user),
        username: me.username.to_string(),
        balance: state.accounts.balance(me.id).await?,
        period_minutes: state.settings.credits.period_minutes,
        has_key: crate::accounts::keys::exists(state.accounts.db(), me.id).await?,
        switches: crate::community::load_settings(state.accounts.db(), me.id).await?,
        presets: presets::NAMES.iter().copied().enumerate().collect(),
        default_style,
        max_frame_bytes: state.settings.stream.max_frame_bytes,
    })
}

pub async fn watch(
    path: web::Path<String>,
    state: web::Data<AppState>,
    session: Session,
    me: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    let user = Username::parse(&path).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let stream = state.control.get(&user).await;
    let switches = stream
        .as_ref()
        .map(|s| s.community.settings())
        .unwrap_or_default();
    let page = Watch {
        nav: Nav::new(&session, &me),
        presets: presets::NAMES.iter().copied().enumerate().collect(),
        comments_open: switches.comments,
        requests_open: stream.is_some() && switches.requests,
        username: user.to_string(),
        live: stream.is_some(),
        viewers: stream.as_ref().map_or(0, |s| s.viewer_count()),
        style: stream
            .as_ref()
            .map(|s| style_name(&s.settings()))
            .unwrap_or_default(),
    };
    html(page)
}

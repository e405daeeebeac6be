//! Server-rendered pages (askama).

use actix_web::{HttpResponse, web};
use askama::Template;
use askama_web::WebTemplate;
use dreamstream_actors::Username;
use gpu_node::neural_style::presets;

use super::AppState;
use super::api::style_name;
use super::errors::ApiError;

pub struct LiveCard {
    pub username: String,
    pub viewers: usize,
    pub style: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
pub struct Home {
    pub live: Vec<LiveCard>,
}

#[derive(Template, WebTemplate)]
#[template(path = "studio.html")]
pub struct Studio {
    pub presets: Vec<(usize, &'static str)>,
    pub default_style: usize,
    pub max_frame_bytes: usize,
}

#[derive(Template, WebTemplate)]
#[template(path = "watch.html")]
pub struct Watch {
    pub username: String,
    pub live: bool,
    pub viewers: usize,
    pub style: String,
}

pub async fn home(state: web::Data<AppState>) -> Home {
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
    Home { live }
}

pub async fn studio(state: web::Data<AppState>) -> Result<Studio, ApiError> {
    let default = state.settings.default_style().map_err(ApiError::Internal)?;
    let default_style = match &default.source {
        dreamstream_actors::StyleSource::Preset { mix } => mix.dominant(),
        _ => 0,
    };
    Ok(Studio {
        presets: presets::NAMES.iter().copied().enumerate().collect(),
        default_style,
        max_frame_bytes: state.settings.stream.max_frame_bytes,
    })
}

pub async fn watch(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = Username::parse(&path).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let stream = state.control.get(&user).await;
    let page = Watch {
        username: user.to_string(),
        live: stream.is_some(),
        viewers: stream.as_ref().map_or(0, |s| s.viewer_count()),
        style: stream
            .as_ref()
            .map(|s| style_name(&s.settings()))
            .unwrap_or_default(),
    };
    let html = page.render().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html))
}

//! The web tier: pages, JSON API, WebSockets, health and metrics.

pub mod account;
pub mod admin;
pub mod api;
pub mod assets;
pub mod auth;
pub mod client_ip;
pub mod community;
pub mod conn_limits;
pub mod credits;
pub mod errors;
pub mod headers;
pub mod health;
pub mod oauth;
pub mod ops;
pub mod pages;
pub mod session;
pub mod v1;
pub mod webrtc;
pub mod ws;

use std::sync::Arc;

use actix_web::web;
use sea_orm::DatabaseConnection;

use crate::accounts::Accounts;
use crate::accounts::oauth::ProviderConfig;
use crate::control::ControlPlane;
use crate::limits::RateLimiter;

/// Shared by every request handler.
/// What the web tier reads of the configuration, parsed once when the
/// application is built ([`WebConfig::from_settings`]).
#[derive(Clone)]
pub struct WebConfig {
    /// `public_url` as configured (no trailing slash); `None` = not set, and
    /// URLs and origins come from the request where that is safe.
    pub configured_public_url: Option<String>,
    /// Where browsers reach this server: `configured_public_url`, or
    /// `http://{listen}`.
    pub public_url: String,
    /// The look a new stream starts with (`stream.default_style`, parsed).
    pub default_style: dreamstream_actors::style::StyleParams,
    pub stream: crate::settings::StreamSettings,
    pub http: crate::settings::HttpSettings,
    pub api: crate::settings::ApiSettings,
    pub accounts: crate::settings::AccountSettings,
    pub credits: crate::settings::CreditSettings,
    /// `[ops] allow`: who may read operational data without logging in.
    pub ops_allow: Vec<ipnet::IpNet>,
    /// `DREAMSTREAM_METRICS_TOKEN`.
    pub metrics_token: Option<secrecy::SecretString>,
}

impl WebConfig {
    pub fn from_settings(s: &crate::settings::Settings) -> anyhow::Result<Self> {
        Ok(Self {
            configured_public_url: s
                .public_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_string()),
            public_url: s.public_url(),
            default_style: s.default_style()?,
            stream: s.stream.clone(),
            http: s.http.clone(),
            api: s.api.clone(),
            accounts: s.accounts.clone(),
            credits: s.credits.clone(),
            ops_allow: s.ops_nets()?,
            metrics_token: s.metrics_token.clone(),
        })
    }

    /// Whether `ip` is in `[ops] allow`.
    pub fn ops_allowed(&self, ip: std::net::IpAddr) -> bool {
        self.ops_allow.iter().any(|n| n.contains(&ip))
    }
}

pub struct AppState {
    pub config: WebConfig,
    pub control: Arc<ControlPlane>,
    pub db: DatabaseConnection,
    pub accounts: Accounts,
    pub limiter: Arc<dyn RateLimiter>,
    /// `REDIS_URL`'s connection (reconnects by itself); `None` = in-memory twins.
    pub redis: Option<redis::aio::ConnectionManager>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub oauth: Vec<ProviderConfig>,
    pub payments: crate::payments::Payments,
    /// Distinct viewers and concurrency peaks (the admin dashboard).
    pub audience: Arc<dyn crate::audience::Audience>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Which streams have a broadcaster (claimed before the upgrade).
    pub broadcasters: Arc<ws::BroadcastSlots>,
    /// Viewer sockets per (stream, client network).
    pub viewers: Arc<ws::ViewerCounts>,
    /// The viewer page's tabs: each tab's viewer socket and WHEP sessions.
    pub tabs: Arc<ws::ViewerTabs>,
    /// WHIP/WHEP (None when `media.udp_listen` is unset).
    pub media: Option<Arc<crate::media::Media>>,
    /// Which `/v1` stream each live channel was started from.
    pub v1: v1::Bindings,
}

/// `303 See Other` to `to` (after a form's POST: the browser GETs it).
pub(crate) fn see_other(to: &str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, to))
        .finish()
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    errors::extractor_configs(cfg);
    credits::routes(cfg);
    admin::routes(cfg);
    community::routes(cfg);
    oauth::routes(cfg);
    webrtc::routes(cfg);
    v1::routes(cfg);
    cfg.route("/", web::get().to(pages::home))
        .route("/studio", web::get().to(pages::studio))
        .route("/login", web::get().to(account::login_page))
        .route("/login", web::post().to(account::login_form))
        .route("/register", web::get().to(account::register_page))
        .route("/register", web::post().to(account::register_form))
        .route("/logout", web::post().to(account::logout_form))
        .route("/account", web::get().to(account::account))
        .route(
            "/account/api-keys",
            web::post().to(account::create_api_key_form),
        )
        .route(
            "/account/api-keys/{id}/revoke",
            web::post().to(account::revoke_api_key_form),
        )
        .route("/s/{username}", web::get().to(pages::watch))
        .route("/s/{username}/frame.jpg", web::get().to(api::latest_frame))
        .route("/static/{file}", web::get().to(assets::serve))
        .route("/favicon.ico", web::get().to(pages::favicon))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/api")
                .route("/auth/csrf", web::get().to(account::csrf_json))
                .route("/auth/register", web::post().to(account::register_json))
                .route("/auth/login", web::post().to(account::login_json))
                .route("/auth/logout", web::post().to(account::logout_json))
                .route(
                    "/auth/logout-everywhere",
                    web::post().to(account::logout_json),
                )
                .route("/me", web::get().to(account::me))
                .route("/me/stream-key", web::post().to(account::rotate_stream_key))
                .route("/me/password", web::post().to(account::change_password))
                .route("/streams", web::get().to(api::list_streams))
                .route("/streams/{username}", web::get().to(api::get_stream))
                .route(
                    "/streams/{username}/start",
                    web::post().to(api::start_stream),
                )
                .route("/streams/{username}/stop", web::post().to(api::stop_stream))
                .route("/streams/{username}/style", web::put().to(api::set_style))
                .route("/styles", web::get().to(api::styles))
                .route("/frame-size", web::get().to(api::frame_size))
                .route("/scheduler", web::get().to(api::scheduler))
                .route("/cluster", web::get().to(api::cluster))
                .route("/diffusion", web::get().to(api::diffusion))
                .route("/server", web::get().to(api::server)),
        )
        .route("/ws/broadcast/{username}", web::get().to(ws::broadcast))
        .route("/ws/watch/{username}", web::get().to(ws::watch))
        .route("/ws/broadcaster/{id}", web::get().to(ws::seed_broadcaster))
        .route("/ws/viewer/{id}", web::get().to(ws::seed_viewer))
        .default_service(web::to(pages::not_found));
}

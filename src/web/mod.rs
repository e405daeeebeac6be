//! The web tier: pages, JSON API, WebSockets, health and metrics.

pub mod api;
pub mod assets;
pub mod auth;
pub mod errors;
pub mod health;
pub mod pages;
pub mod ws;

use std::sync::Arc;

use actix_web::web;
use sea_orm::DatabaseConnection;

use crate::control::ControlPlane;
use crate::settings::Settings;

/// Shared by every request handler.
pub struct AppState {
    pub settings: Settings,
    pub control: Arc<ControlPlane>,
    pub db: DatabaseConnection,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(pages::home))
        .route("/studio", web::get().to(pages::studio))
        .route("/s/{username}", web::get().to(pages::watch))
        .route("/s/{username}/frame.jpg", web::get().to(api::latest_frame))
        .route("/static/{file}", web::get().to(assets::serve))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/api")
                .route("/streams", web::get().to(api::list_streams))
                .route("/streams/{username}", web::get().to(api::get_stream))
                .route(
                    "/streams/{username}/start",
                    web::post().to(api::start_stream),
                )
                .route("/streams/{username}/stop", web::post().to(api::stop_stream))
                .route("/streams/{username}/style", web::put().to(api::set_style))
                .route("/styles", web::get().to(api::styles))
                .route("/scheduler", web::get().to(api::scheduler))
                .route("/cluster", web::get().to(api::cluster))
                .route("/server", web::get().to(api::server)),
        )
        .route("/ws/broadcast/{username}", web::get().to(ws::broadcast))
        .route("/ws/watch/{username}", web::get().to(ws::watch))
        .route("/ws/broadcaster/{id}", web::get().to(ws::seed_broadcaster))
        .route("/ws/viewer/{id}", web::get().to(ws::seed_viewer));
}

//! The few static files the pages need, compiled into the binary.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

const FILES: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../templates/static/app.css"),
    ),
    (
        "studio.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/static/studio.js"),
    ),
    (
        "watch.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/static/watch.js"),
    ),
    (
        "home.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/static/home.js"),
    ),
    (
        "community.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/static/community.js"),
    ),
    (
        "nav.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/static/nav.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../templates/static/favicon.svg"),
    ),
    (
        "webrtc.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/static/webrtc.js"),
    ),
    (
        "frames.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/static/frames.js"),
    ),
];

pub async fn serve(path: web::Path<String>) -> HttpResponse {
    match FILES.iter().find(|(name, _, _)| *name == path.as_str()) {
        Some((_, mime, body)) => HttpResponse::Ok()
            .content_type(*mime)
            .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
            .body(*body),
        None => HttpResponse::NotFound().finish(),
    }
}

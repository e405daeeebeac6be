//! `/healthz` (the process serves), `/readyz` (database and a worker are there),
//! `/metrics` (Prometheus text).

use actix_web::{HttpResponse, web};

use super::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let db = crate::db::ping(&state.db).await;
    let workers = state.control.scheduler_snapshot().await.workers.len();
    let ready = db && workers > 0;
    let body = serde_json::json!({
        "ready": ready,
        "database": db,
        "workers": workers,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

//! `/healthz` (the process serves), `/readyz` (the database, Redis when
//! configured, the control plane's actors answering, and at least one worker), `/metrics` (Prometheus
//! text, for administrators, the metrics token or `[ops] allow`: `web::ops`; gauges that are cheaper to read than to keep — workers by state, the
//! audience numbers — are set as it is scraped).

use std::time::Duration;

use actix_web::{HttpResponse, web};

use super::AppState;
use crate::audience::Audience;
use crate::stats::Stats;

/// A readiness probe answers within this, whatever hangs.
const PROBE: Duration = Duration::from_secs(2);

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `PONG` from Redis; `None` without Redis.
async fn redis_ok(state: &AppState) -> Option<bool> {
    let mut conn = state.redis.clone()?;
    let ping = redis::cmd("PING");
    let answer = tokio::time::timeout(PROBE, ping.query_async::<String>(&mut conn)).await;
    Some(matches!(answer, Ok(Ok(p)) if p == "PONG"))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let db = tokio::time::timeout(PROBE, crate::db::ping(&state.db))
        .await
        .unwrap_or(false);
    let redis = redis_ok(&state).await;
    // The actors must be processing messages, not merely exist.
    let control = state.control.ping(PROBE).await;
    let workers = match &control {
        Ok(()) => state
            .control
            .scheduler_snapshot()
            .await
            .map_or(0, |s| s.workers.len()),
        Err(_) => 0,
    };
    let ready = db && redis != Some(false) && control.is_ok() && workers > 0;
    let body = serde_json::json!({
        "ready": ready,
        "database": db,
        "redis": match redis {
            Some(true) => "ok",
            Some(false) => "down",
            None => "not configured",
        },
        "control_plane": match &control {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        },
        "workers": workers,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(
    _: super::ops::OpsAccess,
    state: web::Data<AppState>,
    stats: web::Data<Stats>,
) -> HttpResponse {
    let snap = state.control.scheduler_snapshot().await;
    let remote = state.control.remote_workers().await;
    if let (Ok(snap), Ok(remote)) = (&snap, &remote) {
        let workers = stats.workers(snap, remote, crate::stats::now_ms());
        for s in dreamstream_actors::scheduler::WorkerState::ALL {
            let n = workers.iter().filter(|w| w.state == s).count();
            metrics::gauge!("dreamstream_workers_by_state", "state" => s.as_str()).set(n as f64);
        }
    }
    metrics::gauge!("dreamstream_control_plane_up").set(if snap.is_ok() { 1.0 } else { 0.0 });
    match stats.report(&[]).await {
        Ok(a) => {
            metrics::gauge!("dreamstream_audience_viewers").set(a.viewers_now as f64);
            metrics::gauge!("dreamstream_audience_peak_viewers").set(a.peak.viewers as f64);
            for (window, n) in [
                ("today", a.unique_ips_today),
                ("7d", a.unique_ips_7d),
                ("all", a.unique_ips_all),
            ] {
                metrics::gauge!("dreamstream_audience_unique_ips", "window" => window)
                    .set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = format!("{e:#}"), "audience numbers unavailable"),
    }
    state.metrics.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

//! The admin dashboard, `/admin`: everything under it is for administrators
//! only — a guard on the whole scope answers 403 to everyone else (and sends
//! a logged-out browser to the login page), so a route added here cannot be
//! left open by mistake.
//!
//! - `GET /admin` — the page (askama), rendered with the numbers of the moment;
//!   `admin.js` then polls `GET /admin/api/overview` (the same numbers as
//!   JSON, [`Overview`]) and `GET /admin/chart.svg` (viewers over the last
//!   hour, drawn on the server) every few seconds and updates it in place.
//! - `GET /admin/admin.js`, `GET /admin/admin.css` — its script and styles.

use actix_session::Session;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpResponse, web};
use askama::Template;

use super::AppState;
use super::errors::ApiError;
use super::pages::Nav;
use super::session::MaybeUser;
use crate::stats::Stats;
use crate::stats::summary::{Overview, WorkerView};

const SCRIPT: &str = include_str!("../../templates/static/admin.js");
const STYLE: &str = include_str!("../../templates/static/admin.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .wrap(from_fn(require_admin))
            .route("", web::get().to(page))
            .route("/api/overview", web::get().to(overview_json))
            .route("/chart.svg", web::get().to(chart))
            .route("/admin.js", web::get().to(script))
            .route("/admin.css", web::get().to(style)),
    );
}

/// Lets administrators through; a logged-out browser asking for the page is
/// sent to log in, anyone else gets 403 (401 for logged-out API calls).
async fn require_admin(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let user = req.extract::<MaybeUser>().await?;
    let page = req.path() == "/admin";
    let refusal = match user.0.as_ref() {
        Some(u) if u.is_admin => None,
        Some(_) if page => {
            use actix_session::SessionExt;
            let session = req.get_session();
            Some(
                super::pages::ErrorPage {
                    nav: Nav::new(&session, &user),
                    code: 403,
                    title: "For administrators only".into(),
                    message: "The dashboard is for the administrators of this server. \
                              You are logged in, but not as one of them."
                        .into(),
                    action: Some(("/studio".into(), "Go to your studio".into())),
                }
                .response(),
            )
        }
        Some(_) => Some(actix_web::ResponseError::error_response(
            &ApiError::Forbidden("administrators only".into()),
        )),
        None if page => Some(
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/login?next=/admin"))
                .finish(),
        ),
        None => Some(actix_web::ResponseError::error_response(
            &ApiError::Unauthorized("log in first".into()),
        )),
    };
    match refusal {
        Some(r) => Ok(req.into_response(r).map_into_right_body()),
        None => {
            let mut res = next.call(req).await?;
            res.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            Ok(res.map_into_left_body())
        }
    }
}

async fn collect(state: &AppState, stats: &Stats) -> Result<Overview, ApiError> {
    Ok(Overview::collect(&state.db, stats, Some(&state.control)).await?)
}

async fn overview_json(
    state: web::Data<AppState>,
    stats: web::Data<Stats>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(collect(&state, &stats).await?))
}

async fn chart(stats: web::Data<Stats>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .body(crate::stats::chart::viewers_svg(&stats.history()))
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(SCRIPT)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}

async fn page(
    state: web::Data<AppState>,
    stats: web::Data<Stats>,
    session: Session,
    user: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    let o = collect(&state, &stats).await?;
    let page = AdminPage::new(Nav::new(&session, &user), &o);
    let body = page.render().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// Numbers as the page shows them (`admin.js` formats the same way).
pub mod fmt {
    /// `1234567` → `1,234,567`.
    pub fn int(n: impl Into<i128>) -> String {
        let n: i128 = n.into();
        let digits = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    }

    /// How long ago `ms` was, before `now`.
    pub fn ago(ms: i64, now: i64) -> String {
        let s = (now - ms).max(0) / 1000;
        match s {
            0..5 => "just now".into(),
            5..60 => format!("{s} s ago"),
            60..3600 => format!("{} min ago", s / 60),
            3600..86400 => format!("{} h ago", s / 3600),
            _ => format!("{} d ago", s / 86400),
        }
    }

    /// A length of time, `1 h 05 min`.
    pub fn span(ms: i64) -> String {
        let s = ms.max(0) / 1000;
        match s {
            0..60 => format!("{s} s"),
            60..3600 => format!("{} min", s / 60),
            _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        }
    }

    /// A moment in UTC, `23 Nov 14:05 UTC`.
    pub fn when(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%-d %b %H:%M UTC").to_string())
            .unwrap_or_default()
    }

    pub fn money(cents: i64, currency: &str) -> String {
        let amount = format!("{}.{:02}", int(cents / 100), (cents % 100).abs());
        match currency.to_ascii_lowercase().as_str() {
            "usd" => format!("${amount}"),
            "eur" => format!("€{amount}"),
            "gbp" => format!("£{amount}"),
            other => format!("{amount} {}", other.to_ascii_uppercase()),
        }
    }

    pub fn one(x: f64) -> String {
        format!("{x:.1}")
    }
}

pub struct Card {
    pub key: &'static str,
    pub label: &'static str,
    pub value: String,
    pub sub: String,
}

pub struct LiveView {
    pub username: String,
    pub started: String,
    pub viewers: String,
    pub peak: String,
    pub peak_at: String,
    pub unique: String,
    pub fps_in: String,
    pub fps_out: String,
    pub dropped: String,
    pub latency: String,
    pub credits: String,
    pub style: String,
    pub connected: bool,
}

pub struct WorkerRowView {
    pub id: String,
    pub node: String,
    pub processor: String,
    /// The models it advertises, comma-separated ("–" when none).
    pub models: String,
    pub state: String,
    pub load: String,
    pub jobs: String,
    pub failed: String,
    pub job_p50: String,
    pub busy: String,
    pub heartbeat: String,
}

pub struct QueueView {
    pub username: String,
    pub waiting: String,
    pub needs: String,
}

pub struct StreamView {
    pub username: String,
    pub started: String,
    pub length: String,
    pub reason: String,
    pub peak: String,
    pub peak_at: String,
    pub unique: String,
    pub credits: String,
}

pub struct UserView {
    pub username: String,
    pub is_admin: bool,
    pub joined: String,
    pub balance: String,
    pub streams: String,
    pub burned: String,
}

pub struct PaymentView {
    pub username: String,
    pub credits: String,
    pub amount: String,
    pub status: String,
    pub when: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
pub struct AdminPage {
    pub nav: Nav,
    pub backend: String,
    pub updated: String,
    pub cards: Vec<Card>,
    pub chart: String,
    pub live: Vec<LiveView>,
    pub workers: Vec<WorkerRowView>,
    pub queue: Vec<QueueView>,
    pub jobs_dispatched: String,
    /// "control plane not answering: …" when it did not.
    pub control_plane_error: Option<String>,
    pub top: Vec<StreamView>,
    pub recent: Vec<StreamView>,
    pub users_total: String,
    pub users_admins: String,
    pub credits_outstanding: String,
    pub credits_burned_all: String,
    pub users: Vec<UserView>,
    pub payments: Vec<PaymentView>,
}

fn worker_view(w: &WorkerView, now: i64) -> WorkerRowView {
    WorkerRowView {
        id: w.id.clone(),
        node: w.node.clone(),
        processor: if w.device.is_empty() {
            w.processor.clone()
        } else {
            format!("{} · {}", w.processor, w.device)
        },
        models: if w.models.is_empty() {
            "–".into()
        } else {
            w.models.join(", ")
        },
        state: w.state.to_string(),
        load: format!("{}/{}", w.in_flight, w.capacity),
        jobs: fmt::int(w.jobs_done),
        failed: fmt::int(w.jobs_failed),
        job_p50: format!("{} ms", fmt::one(w.job_p50_ms)),
        busy: format!("{}%", fmt::one(w.busy_pct)),
        heartbeat: match (w.lost_at_ms, w.last_heartbeat_ms) {
            (Some(at), _) => format!("lost {}", fmt::ago(at, now)),
            (None, Some(ms)) => format!("{} ms ago", ms.round()),
            (None, None) => "in process".into(),
        },
    }
}

fn stream_view(s: &crate::stats::summary::StreamRow, now: i64) -> StreamView {
    let started = s.started_at.timestamp_millis();
    StreamView {
        username: s.username.clone(),
        started: fmt::when(started),
        length: s
            .ended_at
            .map(|e| fmt::span(e.timestamp_millis() - started))
            .unwrap_or_else(|| format!("live, {}", fmt::span(now - started))),
        reason: s.end_reason.clone().unwrap_or_default().replace('_', " "),
        peak: fmt::int(s.peak_viewers),
        peak_at: s
            .peak_at
            .map(|t| fmt::when(t.timestamp_millis()))
            .unwrap_or_default(),
        unique: fmt::int(s.unique_viewers),
        credits: fmt::int(s.credits_charged),
    }
}

impl AdminPage {
    pub fn new(nav: Nav, o: &Overview) -> Self {
        let now = o.generated_at_ms;
        let a = &o.audience;
        let peak_when = a
            .peak
            .at_ms
            .map(|t| format!("{} ({})", fmt::when(t), fmt::ago(t, now)))
            .unwrap_or_else(|| "nobody yet".into());
        let cards = vec![
            Card {
                key: "live",
                label: "Live streams",
                value: fmt::int(o.live.len() as u64),
                sub: format!("{} waiting for a worker", o.queue.len()),
            },
            Card {
                key: "viewers",
                label: "Watching now",
                value: fmt::int(a.viewers_now),
                sub: format!(
                    "{} tune-ins today · {} all time",
                    fmt::int(a.tune_ins_today),
                    fmt::int(a.tune_ins_all)
                ),
            },
            Card {
                key: "peak",
                label: "Most at once",
                value: fmt::int(a.peak.viewers),
                sub: peak_when,
            },
            Card {
                key: "created",
                label: "Streams today",
                value: fmt::int(o.streams_created.today),
                sub: format!(
                    "{} in 7 days · {} all time",
                    fmt::int(o.streams_created.week),
                    fmt::int(o.streams_created.all)
                ),
            },
            Card {
                key: "ips",
                label: "Distinct IPs today",
                value: fmt::int(a.unique_ips_today),
                sub: format!(
                    "{} in 7 days · {} all time",
                    fmt::int(a.unique_ips_7d),
                    fmt::int(a.unique_ips_all)
                ),
            },
            Card {
                key: "workers",
                label: "GPU workers",
                value: fmt::int(o.worker_states.busy + o.worker_states.idle),
                sub: format!(
                    "{} busy · {} idle · {} lost",
                    o.worker_states.busy, o.worker_states.idle, o.worker_states.lost
                ),
            },
            Card {
                key: "credits",
                label: "Credits burned today",
                value: fmt::int(o.users.credits_burned_today),
                sub: format!(
                    "{} held by {} users",
                    fmt::int(o.users.credits_outstanding),
                    fmt::int(o.users.total)
                ),
            },
        ];
        Self {
            nav,
            backend: a.backend.clone(),
            updated: fmt::when(now),
            cards,
            chart: crate::stats::chart::viewers_svg(&o.history),
            live: o
                .live
                .iter()
                .map(|l| LiveView {
                    username: l.username.clone(),
                    started: fmt::ago(l.started_at_ms, now),
                    viewers: fmt::int(l.viewers),
                    peak: fmt::int(l.peak.viewers),
                    peak_at: l.peak.at_ms.map(|t| fmt::ago(t, now)).unwrap_or_default(),
                    unique: fmt::int(l.unique_ips),
                    fps_in: fmt::one(l.fps_in),
                    fps_out: fmt::one(l.fps_out),
                    dropped: format!("{}%", fmt::one(l.dropped_pct)),
                    latency: l
                        .latency_p50_ms
                        .map(|ms| format!("{} ms", ms.round()))
                        .unwrap_or_else(|| "–".into()),
                    credits: fmt::int(l.credits_burned),
                    style: l.style.clone(),
                    connected: l.broadcaster_connected,
                })
                .collect(),
            workers: o.workers.iter().map(|w| worker_view(w, now)).collect(),
            queue: o
                .queue
                .iter()
                .map(|q| QueueView {
                    username: q.username.clone(),
                    waiting: format!("{} ms", q.waiting_ms.round()),
                    needs: q.needs.clone(),
                })
                .collect(),
            jobs_dispatched: fmt::int(o.jobs_dispatched),
            control_plane_error: o.control_plane_error.clone(),
            top: o.top_streams.iter().map(|s| stream_view(s, now)).collect(),
            recent: o
                .recent_streams
                .iter()
                .map(|s| stream_view(s, now))
                .collect(),
            users_total: fmt::int(o.users.total),
            users_admins: fmt::int(o.users.admins),
            credits_outstanding: fmt::int(o.users.credits_outstanding),
            credits_burned_all: fmt::int(o.users.credits_burned_all),
            users: o
                .users
                .recent
                .iter()
                .map(|u| UserView {
                    username: u.username.clone(),
                    is_admin: u.is_admin,
                    joined: fmt::ago(u.created_at_ms, now),
                    balance: fmt::int(u.balance),
                    streams: fmt::int(u.streams),
                    burned: fmt::int(u.credits_burned),
                })
                .collect(),
            payments: o
                .payments
                .iter()
                .map(|p| PaymentView {
                    username: p.username.clone(),
                    credits: fmt::int(p.credits),
                    amount: fmt::money(p.amount_cents, &p.currency),
                    status: p.status.clone(),
                    when: fmt::ago(p.created_at_ms, now),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fmt;

    #[test]
    fn admin_formats_numbers_like_the_script() {
        assert_eq!(fmt::int(1_234_567u64), "1,234,567");
        assert_eq!(fmt::int(-1_000i64), "-1,000");
        assert_eq!(fmt::int(12u64), "12");
        assert_eq!(fmt::ago(0, 90_000), "1 min ago");
        assert_eq!(fmt::ago(0, 3_000), "just now");
        assert_eq!(fmt::span(3_900_000), "1 h 05 min");
        assert_eq!(fmt::money(1999, "usd"), "$19.99");
        assert_eq!(fmt::money(500, "sek"), "5.00 SEK");
        assert_eq!(fmt::when(0), "1 Jan 00:00 UTC");
    }
}

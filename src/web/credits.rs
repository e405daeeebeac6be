//! `/credits`: the balance, the ledger and buying packs with Stripe Checkout;
//! `/credits/success`, where Stripe sends the buyer back; and
//! `POST /webhooks/stripe`, where Stripe reports payments (see
//! [`crate::payments`] for the flow and its invariants).
//!
//! Pages that need a login redirect (303) to `/login?next=...`. The webhook
//! takes the raw body as bytes: the signature covers the exact bytes Stripe
//! sent, so nothing may parse or re-encode them first.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::AppState;
use super::errors::ApiError;
use super::pages::Nav;
use super::session::{MaybeUser, check_csrf};
use crate::accounts::User;
use crate::accounts::ledger::{Reason, Reference};
use crate::payments::fulfil::{Outcome, Status};
use crate::payments::{self, PAYMENTS_OFF, PaymentError, format_price, webhook};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/credits", web::get().to(credits_page))
        .route("/credits/checkout", web::post().to(checkout))
        .route("/credits/success", web::get().to(success_page))
        .route("/webhooks/stripe", web::post().to(stripe_webhook));
}

/// Ledger rows shown on the page.
const HISTORY_ROWS: u64 = 50;
/// The success page reloads every 2 s while the payment is processing, this
/// many times (about a minute), then asks the buyer to look again later.
const SUCCESS_REFRESHES: u32 = 30;

#[derive(Template)]
#[template(path = "credits.html")]
struct CreditsPage {
    nav: Nav,
    balance: i64,
    time_left: String,
    period_minutes: u64,
    payments_on: bool,
    payments_off_message: &'static str,
    packs: Vec<PackView>,
    ledger: Vec<LedgerRow>,
    error: Option<String>,
}

struct PackView {
    index: usize,
    credits: i64,
    time: String,
    /// `None` for packs priced by a Stripe price id (Stripe shows the price).
    price: Option<String>,
}

struct LedgerRow {
    when: String,
    delta: i64,
    /// What happened, in words ("Welcome bonus", "Stream on Dec 2, 17:51 (56 s)").
    what: String,
}

/// What the streamer reads when payments are off (the operator's hint —
/// STRIPE_SECRET_KEY, `dreamstream admin grant-credits` — goes to the log
/// and the README, not to them).
pub const PAYMENTS_OFF_FOR_STREAMERS: &str = "Buying credits is not available on this server. \
     Ask its administrator to add credits to your account.";

/// Logs the operator's hint once per process, the first time a streamer
/// meets payments that are off.
fn log_payments_off() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::warn!(hint = PAYMENTS_OFF, "a streamer asked to buy credits"));
}

/// A moment as the ledger shows it: `Dec 2, 17:51` (UTC).
fn short_when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%b %-d, %H:%M").to_string()
}

/// A stream's length: `56 s`, `14 min 3 s`, `1 h 02 min`.
fn length_words(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// `stream:{id}:{period}` → (id, period).
fn stream_reference(reference: &str) -> Option<(i64, u64)> {
    match Reference::parse(reference)? {
        Reference::Stream { stream, charge } => Some((stream, charge)),
        _ => None,
    }
}

/// Ledger entries in words. Stream charges name the stream (when it began,
/// how long it lasted) from the streams table: one read-only query for the
/// page, limited to the user's own streams.
async fn describe_ledger(
    state: &AppState,
    user_id: i64,
    rows: Vec<crate::db::entities::credit_ledger::Model>,
) -> Result<Vec<LedgerRow>, ApiError> {
    use crate::db::entities::stream;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let ids: Vec<i64> = rows
        .iter()
        .filter_map(|r| stream_reference(&r.reference).map(|(id, _)| id))
        .collect();
    let streams: std::collections::HashMap<i64, stream::Model> = if ids.is_empty() {
        Default::default()
    } else {
        stream::Entity::find()
            .filter(stream::Column::Id.is_in(ids))
            .filter(stream::Column::UserId.eq(user_id))
            .all(state.accounts.db())
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect()
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let what = match Reason::parse(&r.reason) {
                Some(Reason::SignupBonus) => "Welcome bonus".to_string(),
                Some(Reason::Purchase) => format!("Bought {} credits", r.delta),
                Some(Reason::AdminGrant) if r.delta < 0 => {
                    "Removed by an administrator".to_string()
                }
                Some(Reason::AdminGrant) => "Added by an administrator".to_string(),
                Some(Reason::Stream) => match stream_reference(&r.reference)
                    .and_then(|(id, period)| streams.get(&id).map(|s| (s, period)))
                {
                    Some((s, period)) => {
                        let length = match s.ended_at {
                            Some(end) => length_words((end - s.started_at).num_seconds()),
                            None => "live now".to_string(),
                        };
                        let nth = if period > 0 {
                            let pm = state.config.credits.period_minutes;
                            format!(", minutes {}–{}", period * pm, (period + 1) * pm)
                        } else {
                            String::new()
                        };
                        format!("Stream on {} ({length}){nth}", short_when(s.started_at))
                    }
                    None => "Streaming time".to_string(),
                },
                // A word this version does not write (older rows, tests).
                None => {
                    let words = r.reason.replace('_', " ");
                    let mut c = words.chars();
                    match c.next() {
                        Some(f) => f.to_uppercase().chain(c).collect(),
                        None => "Adjustment".to_string(),
                    }
                }
            };
            LedgerRow {
                when: short_when(r.created_at),
                delta: r.delta,
                what,
            }
        })
        .collect())
}

#[derive(Template)]
#[template(path = "credits_success.html")]
struct SuccessPage {
    nav: Nav,
    /// `paid`, `pending`, `processing`, `failed`, or `unknown`.
    status: &'static str,
    credits: i64,
    balance: i64,
    /// Where the meta refresh goes while the payment is processing.
    refresh: Option<String>,
}

fn html(status: StatusCode, page: &impl Template) -> Result<HttpResponse, ApiError> {
    let body = page.render().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// `95 min` → `1 h 35 min`.
fn duration_words(minutes: i64) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// The credits page for `me`, with an optional error (and its status code).
async fn render_credits(
    state: &AppState,
    session: &Session,
    user: &MaybeUser,
    me: &User,
    error: Option<(StatusCode, String)>,
) -> Result<HttpResponse, ApiError> {
    let period = state.config.credits.period_minutes;
    let minutes_per_credit = i64::try_from(period).unwrap_or(i64::MAX);
    let balance = state.accounts.balance(me.id).await?;
    let ledger = state.accounts.ledger.history(me.id, HISTORY_ROWS).await?;
    if !state.payments.enabled() {
        log_payments_off();
    }
    let (status, error) = match error {
        Some((s, e)) => (s, Some(e)),
        None => (StatusCode::OK, None),
    };
    let page = CreditsPage {
        nav: Nav::new(session, user),
        balance,
        time_left: duration_words(balance.saturating_mul(minutes_per_credit)),
        period_minutes: period,
        payments_on: state.payments.enabled(),
        payments_off_message: PAYMENTS_OFF_FOR_STREAMERS,
        packs: state
            .payments
            .packs()
            .iter()
            .enumerate()
            .map(|(index, p)| PackView {
                index,
                credits: p.credits,
                time: duration_words(p.credits.saturating_mul(minutes_per_credit)),
                price: p
                    .price_cents
                    .zip(p.currency.as_deref())
                    .filter(|_| p.price_id.is_none())
                    .map(|(cents, cur)| format_price(cents, cur)),
            })
            .collect(),
        ledger: describe_ledger(state, me.id, ledger).await?,
        error,
    };
    html(status, &page)
}

/// `GET /credits`
async fn credits_page(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    let Some(me) = user.0.clone() else {
        return Ok(super::see_other("/login?next=/credits"));
    };
    render_credits(&state, &session, &user, &me, None).await
}

#[derive(Deserialize)]
struct CheckoutForm {
    #[serde(default)]
    csrf: Option<String>,
    /// The index of the pack in the configuration.
    #[serde(default)]
    pack: Option<String>,
}

/// The status code a failed checkout answers with.
fn checkout_status(e: &PaymentError) -> StatusCode {
    match e {
        PaymentError::Off | PaymentError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
        PaymentError::NoSuchPack(_) => StatusCode::BAD_REQUEST,
        PaymentError::Refused(_) => StatusCode::BAD_GATEWAY,
        PaymentError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `POST /credits/checkout` (form: `csrf`, `pack`): 303 to Stripe's payment
/// page, or the credits page again with the reason it did not work.
async fn checkout(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
    form: web::Form<CheckoutForm>,
) -> Result<HttpResponse, ApiError> {
    let Some(me) = user.0.clone() else {
        return Ok(super::see_other("/login?next=/credits"));
    };
    check_csrf(&session, form.csrf.as_deref())?;
    let Some(pack) = form
        .pack
        .as_deref()
        .and_then(|p| p.trim().parse::<usize>().ok())
    else {
        let error = (
            StatusCode::BAD_REQUEST,
            "choose one of the packs".to_string(),
        );
        return render_credits(&state, &session, &user, &me, Some(error)).await;
    };
    match state
        .payments
        .start_checkout(&state.accounts.ledger, me.id, pack)
        .await
    {
        Ok(started) => Ok(super::see_other(&started.url)),
        Err(PaymentError::Db(e)) => Err(ApiError::Internal(
            anyhow::Error::new(e).context("failed to record the checkout"),
        )),
        Err(PaymentError::Off) => {
            log_payments_off();
            let error = (
                StatusCode::SERVICE_UNAVAILABLE,
                PAYMENTS_OFF_FOR_STREAMERS.to_string(),
            );
            render_credits(&state, &session, &user, &me, Some(error)).await
        }
        Err(e) => {
            let error = (checkout_status(&e), e.to_string());
            render_credits(&state, &session, &user, &me, Some(error)).await
        }
    }
}

#[derive(Deserialize)]
struct SuccessQuery {
    #[serde(default)]
    session_id: Option<String>,
    /// How many times the page has refreshed itself.
    #[serde(default)]
    n: Option<u32>,
}

/// Stripe ids are short and made of `[A-Za-z0-9_]`.
fn is_session_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `GET /credits/success?session_id=...`: whether the buyer's payment is in,
/// and the balance. Only the buyer's own sessions are shown.
async fn success_page(
    state: web::Data<AppState>,
    session: Session,
    user: MaybeUser,
    q: web::Query<SuccessQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = q.session_id.as_deref().filter(|s| is_session_id(s));
    let Some(me) = user.0.clone() else {
        let back = match id {
            Some(id) => format!("/credits/success?session_id={id}"),
            None => "/credits".into(),
        };
        let next: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
        return Ok(super::see_other(&format!("/login?next={next}")));
    };
    let payment = match id {
        Some(id) => payments::payment_of(state.accounts.db(), me.id, id).await?,
        None => None,
    };
    let status = payment.as_ref().and_then(|p| Status::parse(&p.status));
    let waiting = matches!(status, Some(Status::Pending | Status::Processing));
    let n = q.n.unwrap_or(0);
    let refresh = match id {
        Some(id) if waiting && n < SUCCESS_REFRESHES => {
            Some(format!("/credits/success?session_id={id}&n={}", n + 1))
        }
        _ => None,
    };
    let page = SuccessPage {
        nav: Nav::new(&session, &user),
        status: status.map_or("unknown", Status::as_str),
        credits: payment.as_ref().map_or(0, |p| p.credits),
        balance: state.accounts.balance(me.id).await?,
        refresh,
    };
    let code = if payment.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    html(code, &page)
}

/// `POST /webhooks/stripe`: verifies and applies one event. 200 for anything
/// handled, duplicated or deliberately ignored (so Stripe stops sending it);
/// 400 for a bad signature or body (nothing written); 503 without a webhook
/// secret; 500 if storage failed (Stripe retries).
async fn stripe_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let Some(secret) = state.payments.webhook_secret() else {
        return Err(ApiError::Unavailable(
            "Stripe webhooks are off on this server: STRIPE_WEBHOOK_SECRET is not set".into(),
        ));
    };
    // A header that is not text cannot carry a valid signature.
    let signature = req
        .headers()
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or(""));
    let event = webhook::verify(&body, signature, secret).map_err(|e| {
        tracing::warn!(error = %e, "Stripe webhook refused");
        ApiError::BadRequest(e.to_string())
    })?;
    let outcome = state
        .payments
        .handle_event(&state.accounts.ledger, &event)
        .await
        .map_err(|e| {
            ApiError::Internal(anyhow::Error::new(e).context(format!(
                "failed to apply Stripe event {} ({})",
                event.id, event.type_name
            )))
        })?;
    log_outcome(&event, &outcome);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "received": true,
        "event": event.id,
        "outcome": outcome.label(),
    })))
}

fn log_outcome(event: &webhook::StripeEvent, outcome: &Outcome) {
    let (id, kind) = (&event.id, &event.type_name);
    match outcome {
        Outcome::Credited {
            user_id,
            credits,
            balance,
        } => tracing::info!(event = %id, %kind, user_id, credits, balance, "credits bought"),
        Outcome::Ignored(why) => tracing::info!(event = %id, %kind, why, "Stripe event ignored"),
        other => {
            tracing::info!(event = %id, %kind, outcome = other.label(), "Stripe event handled")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_words(0), "0 min");
        assert_eq!(duration_words(50), "50 min");
        assert_eq!(duration_words(60), "1 h");
        assert_eq!(duration_words(95), "1 h 35 min");
    }

    #[test]
    fn stream_references_parse() {
        assert_eq!(stream_reference("stream:42:0"), Some((42, 0)));
        assert_eq!(stream_reference("stream:42:3"), Some((42, 3)));
        assert_eq!(stream_reference("stream:42"), None);
        assert_eq!(stream_reference("stream:x:1"), None);
        assert_eq!(stream_reference("stripe:cs_1"), None);
        assert_eq!(length_words(56), "56 s");
        assert_eq!(length_words(843), "14 min 3 s");
        assert_eq!(length_words(3720), "1 h 02 min");
    }

    #[test]
    fn only_plain_ids_are_session_ids() {
        assert!(is_session_id("cs_test_a1B2c3"));
        assert!(!is_session_id(""));
        assert!(!is_session_id("cs_1&n=5"));
        assert!(!is_session_id("<script>"));
    }
}

//! Reading a Stripe webhook delivery: the `Stripe-Signature` check on the raw
//! body, then the few fields of the event that fulfilment needs.
//!
//! The signature (HMAC-SHA256 of `"{t}.{body}"`, timestamp within ±300 s) is
//! checked by async-stripe-webhook's `Webhook::construct_event`. That call also
//! parses the whole event into the SDK's types, which only works for objects
//! shaped like the SDK's pinned API version; a correctly signed event it cannot
//! parse (another API version, an event type we never asked about) comes back
//! as `BadParse` — *after* the signature and timestamp passed. So `BadParse`
//! counts as verified, and the fields we use are read from the raw JSON here:
//! a Stripe API upgrade then cannot make us refuse (and Stripe re-send for
//! days) an event we only need five fields of.

use std::collections::HashMap;

use serde::Deserialize;
use stripe_webhook::{Webhook, WebhookError};

/// Why a delivery was refused (400: nothing was written).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("missing Stripe-Signature header")]
    MissingSignature,
    #[error("the Stripe-Signature header does not match the body (wrong secret or altered body)")]
    BadSignature,
    #[error(
        "the Stripe-Signature timestamp {0} is more than 300 s from now (replayed or delayed event)"
    )]
    StaleTimestamp(i64),
    #[error("the event body is not valid UTF-8")]
    NotUtf8,
    #[error("the event is not valid Stripe event JSON: {0}")]
    Malformed(String),
}

/// A verified event, reduced to what we act on.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeEvent {
    /// `evt_...`: handled at most once.
    pub id: String,
    /// As Stripe names it (`checkout.session.completed`).
    pub type_name: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// `checkout.session.completed`: paid, or (async methods) still unpaid.
    Completed(Session),
    /// `checkout.session.async_payment_succeeded`: the money arrived.
    AsyncSucceeded(Session),
    /// `checkout.session.async_payment_failed`: it never will.
    AsyncFailed(Session),
    /// Anything else: acknowledged and ignored.
    Other,
}

/// The fields of a Checkout Session that fulfilment reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Session {
    /// `cs_...`
    pub id: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
    /// Our user id, as set at checkout.
    #[serde(default)]
    pub client_reference_id: Option<String>,
    /// `user_id`, `credits`, `pack`, as set at checkout.
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
}

impl Session {
    pub fn is_paid(&self) -> bool {
        self.payment_status == "paid"
    }

    /// A metadata value, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key).map(String::as_str)
    }
}

/// Checks the signature of `body` and reads the event.
pub fn verify(
    body: &[u8],
    signature: Option<&str>,
    secret: &str,
) -> Result<StripeEvent, Rejection> {
    let signature = signature.ok_or(Rejection::MissingSignature)?;
    let payload = std::str::from_utf8(body).map_err(|_| Rejection::NotUtf8)?;
    match Webhook::construct_event(payload, signature, secret) {
        // Both mean: signature and timestamp are good (see the module docs).
        Ok(_) | Err(WebhookError::BadParse(_)) => parse(payload),
        Err(WebhookError::BadTimestamp(t)) => Err(Rejection::StaleTimestamp(t)),
        Err(WebhookError::BadSignature | WebhookError::BadHeader(_) | WebhookError::BadKey) => {
            Err(Rejection::BadSignature)
        }
    }
}

/// The envelope of every Stripe event.
#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    type_name: String,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    object: serde_json::Value,
}

/// Reads an already verified payload.
fn parse(payload: &str) -> Result<StripeEvent, Rejection> {
    let raw: RawEvent =
        serde_json::from_str(payload).map_err(|e| Rejection::Malformed(e.to_string()))?;
    let session = || {
        serde_json::from_value::<Session>(raw.data.object.clone())
            .map_err(|e| Rejection::Malformed(format!("data.object: {e}")))
    };
    let kind = match raw.type_name.as_str() {
        "checkout.session.completed" => EventKind::Completed(session()?),
        "checkout.session.async_payment_succeeded" => EventKind::AsyncSucceeded(session()?),
        "checkout.session.async_payment_failed" => EventKind::AsyncFailed(session()?),
        _ => EventKind::Other,
    };
    Ok(StripeEvent {
        id: raw.id,
        type_name: raw.type_name,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_unit";

    fn signed(body: &str, t: i64) -> String {
        Webhook::generate_test_header(body, SECRET, Some(t))
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn a_signed_event_the_sdk_cannot_type_is_still_read() {
        // Too thin for the SDK's CheckoutSession, but correctly signed.
        let body = r#"{"id":"evt_1","object":"event","type":"checkout.session.completed",
            "data":{"object":{"id":"cs_1","object":"checkout.session","payment_status":"paid",
            "client_reference_id":"7","metadata":{"credits":"6"}}}}"#;
        let e = verify(body.as_bytes(), Some(&signed(body, now())), SECRET).unwrap();
        assert_eq!(e.id, "evt_1");
        let EventKind::Completed(s) = e.kind else {
            panic!("{e:?}")
        };
        assert!(s.is_paid());
        assert_eq!(s.meta("credits"), Some("6"));
        assert_eq!(s.client_reference_id.as_deref(), Some("7"));
    }

    #[test]
    fn bad_signatures_and_old_timestamps_are_refused() {
        let body = r#"{"id":"evt_1","type":"x.y","data":{"object":{}}}"#;
        assert_eq!(
            verify(body.as_bytes(), None, SECRET),
            Err(Rejection::MissingSignature)
        );
        let other = Webhook::generate_test_header(body, "whsec_other", Some(now()));
        assert_eq!(
            verify(body.as_bytes(), Some(&other), SECRET),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify(body.as_bytes(), Some("garbage"), SECRET),
            Err(Rejection::BadSignature)
        );
        let old = now() - 301;
        assert_eq!(
            verify(body.as_bytes(), Some(&signed(body, old)), SECRET),
            Err(Rejection::StaleTimestamp(old))
        );
        let e = verify(body.as_bytes(), Some(&signed(body, now() - 290)), SECRET).unwrap();
        assert_eq!(e.kind, EventKind::Other);
    }

    #[test]
    fn signed_garbage_is_malformed_not_a_panic() {
        let body = "not json";
        let r = verify(body.as_bytes(), Some(&signed(body, now())), SECRET);
        assert!(matches!(r, Err(Rejection::Malformed(_))), "{r:?}");
        let body =
            r#"{"id":"evt_2","type":"checkout.session.completed","data":{"object":{"id":5}}}"#;
        let r = verify(body.as_bytes(), Some(&signed(body, now())), SECRET);
        assert!(matches!(r, Err(Rejection::Malformed(_))), "{r:?}");
    }
}

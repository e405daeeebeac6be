//! Buying credits: packs sold with Stripe Checkout, and the Stripe webhook
//! that fulfils them.
//!
//! The flow: `POST /credits/checkout` creates a Checkout Session for one of
//! the configured packs and records a `payments` row, status `pending`
//! ([`checkout`]). The buyer pays on Stripe's page. Stripe then calls
//! `POST /webhooks/stripe` with a signed event ([`webhook`] verifies it and
//! reads the few fields we need), and [`fulfil`] credits the buyer.
//!
//! Invariants:
//! - Credits are added only for a verified `checkout.session.completed` with
//!   `payment_status = paid`, or `checkout.session.async_payment_succeeded`,
//!   as one ledger row with reference `stripe:{checkout session id}`: a session
//!   credits at most once, however often or concurrently Stripe delivers it.
//! - An event is handled at most once (`stripe_events.event_id` is the primary
//!   key), in the same transaction as its ledger row and payment status.
//! - `payments` rows of a user are written while holding that user's ledger
//!   lock ([`crate::accounts::Ledger::begin`]), so checkout and webhook never
//!   race on them.
//!
//! Without `STRIPE_SECRET_KEY` payments are off (admins grant credits with
//! `dreamstream admin grant-credits USER N`); without `STRIPE_WEBHOOK_SECRET`
//! the webhook refuses events (503), so Stripe keeps them until it is set.

pub mod checkout;
pub mod fulfil;
pub mod webhook;

use std::time::Duration;

use anyhow::{Context, bail};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use secrecy::{ExposeSecret, SecretString};

use crate::db::entities::payment;

pub use checkout::StartedCheckout;
pub use fulfil::Outcome;

/// What the buyer is told when payments are off.
pub const PAYMENTS_OFF: &str = "Payments are off on this server (no STRIPE_SECRET_KEY). \
     An admin can grant credits: dreamstream admin grant-credits USER N";

/// How long one call to Stripe may take before the buyer is told to retry.
const STRIPE_TIMEOUT: Duration = Duration::from_secs(15);

/// A pack of credits sold with Stripe Checkout (`[[credits.packs]]`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct CreditPack {
    pub credits: i64,
    /// Price in the currency's smallest unit (with `currency`)...
    #[serde(default)]
    pub price_cents: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    /// ...or a Stripe price id.
    #[serde(default)]
    pub price_id: Option<String>,
}

/// `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`, `STRIPE_API_BASE` (from the
/// environment only).
#[derive(Debug, Clone, Default)]
pub struct StripeSecrets {
    pub secret_key: Option<SecretString>,
    pub webhook_secret: Option<SecretString>,
    /// Not a secret: where Stripe's API is (a stub in the tests).
    pub api_base: Option<String>,
}

/// What [`Payments`] is built from (`Settings::payments`).
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// The packs on sale, in the order of the configuration.
    pub packs: Vec<CreditPack>,
    pub stripe: StripeSecrets,
    /// Where Stripe sends the buyer back (no trailing slash).
    pub public_url: String,
}

/// Stripe access and the packs on sale (cheap to share: lives in `AppState`).
pub struct Payments {
    /// `None` when payments are off (no `STRIPE_SECRET_KEY`).
    stripe: Option<stripe::Client>,
    webhook_secret: Option<SecretString>,
    packs: Vec<CreditPack>,
    /// Where Stripe sends the buyer back (no trailing slash).
    public_url: String,
}

/// Why a purchase could not start. Each maps to a status code in the web tier.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{PAYMENTS_OFF}")]
    Off,
    #[error("there is no credit pack number {0}")]
    NoSuchPack(usize),
    /// Stripe answered with an error (bad key, bad request...).
    #[error("Stripe refused to start the checkout: {0}")]
    Refused(String),
    /// Stripe could not be reached or did not answer in time.
    #[error("Stripe cannot be reached right now ({0}); try again in a minute")]
    Unreachable(String),
    #[error("storage failed: {0}")]
    Db(#[from] sea_orm::DbErr),
}

impl Payments {
    pub fn new(config: PaymentsConfig) -> anyhow::Result<Self> {
        let PaymentsConfig {
            packs,
            stripe,
            public_url,
        } = config;
        for (i, pack) in packs.iter().enumerate() {
            check_pack(pack).with_context(|| format!("credits.packs[{i}] is not usable"))?;
        }
        let webhook_secret = stripe.webhook_secret;
        let stripe = match &stripe.secret_key {
            Some(key) => Some(client(key.expose_secret(), stripe.api_base.as_deref())?),
            None => None,
        };
        if stripe.is_some() && webhook_secret.is_none() {
            tracing::warn!(
                "STRIPE_SECRET_KEY is set but STRIPE_WEBHOOK_SECRET is not: \
                 purchases will not be credited until it is"
            );
        }
        Ok(Self {
            stripe,
            webhook_secret,
            packs,
            public_url,
        })
    }

    /// Whether buying is possible (a Stripe secret key is configured).
    pub fn enabled(&self) -> bool {
        self.stripe.is_some()
    }

    /// The packs on sale, in the order of the configuration (the form sends the index).
    pub fn packs(&self) -> &[CreditPack] {
        &self.packs
    }

    /// The webhook signing secret; `None` = the webhook is off.
    pub fn webhook_secret(&self) -> Option<&str> {
        self.webhook_secret
            .as_ref()
            .map(ExposeSecret::expose_secret)
    }
}

/// `user_id`'s payment for Checkout Session `session_id` (another user's → `None`).
pub async fn payment_of(
    db: &DatabaseConnection,
    user_id: i64,
    session_id: &str,
) -> Result<Option<payment::Model>, DbErr> {
    payment::Entity::find()
        .filter(payment::Column::CheckoutSession.eq(session_id))
        .filter(payment::Column::UserId.eq(user_id))
        .one(db)
        .await
}

/// The Stripe client. `STRIPE_API_BASE` points it elsewhere (a local stub in
/// tests); async-stripe appends `v1/...` to the base, so it must end in `/`.
fn client(key: &str, api_base: Option<&str>) -> anyhow::Result<stripe::Client> {
    // rustls has two crypto providers in this build: pick one before the
    // client's TLS config is made, or rustls panics.
    gpu_node::cluster::install_crypto_provider();
    let mut builder = stripe::ClientBuilder::new(key).timeout(STRIPE_TIMEOUT);
    if let Some(base) = api_base {
        let base = format!("{}/", base.trim_end_matches('/'));
        builder = builder.url(base);
    }
    builder.build().map_err(|e| {
        anyhow::anyhow!(
            "failed to make the Stripe client from STRIPE_SECRET_KEY / STRIPE_API_BASE: {e}"
        )
    })
}

/// A pack must name a positive number of credits and either a Stripe price id
/// or a positive price with a three-letter currency.
fn check_pack(pack: &CreditPack) -> anyhow::Result<()> {
    if pack.credits <= 0 {
        bail!("credits must be positive (got {})", pack.credits);
    }
    if pack.price_id.is_some() {
        return Ok(());
    }
    match (pack.price_cents, pack.currency.as_deref()) {
        (Some(cents), Some(cur)) if cents > 0 && is_currency_code(cur) => Ok(()),
        _ => bail!("give either price_id, or price_cents > 0 with a currency such as \"usd\""),
    }
}

fn is_currency_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_lowercase())
}

/// Currencies without a minor unit: their `price_cents` is whole units.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// A price for people: `5.00 USD`, `500 JPY`.
pub fn format_price(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        format!("{amount} {code}")
    } else {
        let sign = if amount < 0 { "-" } else { "" };
        let a = amount.unsigned_abs();
        format!("{sign}{}.{:02} {code}", a / 100, a % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(credits: i64, cents: Option<i64>, cur: Option<&str>, id: Option<&str>) -> CreditPack {
        CreditPack {
            credits,
            price_cents: cents,
            currency: cur.map(String::from),
            price_id: id.map(String::from),
        }
    }

    #[test]
    fn packs_need_credits_and_a_price() {
        assert!(check_pack(&pack(6, Some(500), Some("usd"), None)).is_ok());
        assert!(check_pack(&pack(6, None, None, Some("price_123"))).is_ok());
        assert!(check_pack(&pack(0, Some(500), Some("usd"), None)).is_err());
        assert!(check_pack(&pack(6, Some(500), None, None)).is_err());
        assert!(check_pack(&pack(6, Some(0), Some("usd"), None)).is_err());
        assert!(check_pack(&pack(6, Some(500), Some("USD"), None)).is_err());
    }

    #[test]
    fn prices_are_shown_in_major_units() {
        assert_eq!(format_price(500, "usd"), "5.00 USD");
        assert_eq!(format_price(1999, "eur"), "19.99 EUR");
        assert_eq!(format_price(500, "jpy"), "500 JPY");
    }
}

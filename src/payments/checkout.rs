//! Starting a purchase: a Stripe Checkout Session for one pack, and the
//! `payments` row that remembers it (status `pending` until the webhook).
//!
//! The session carries who buys (`client_reference_id` = user id) and what
//! (`metadata`: user_id, credits, pack), because the webhook must be able to
//! fulfil it even if it arrives before our own row is written.

use std::collections::HashMap;

use sea_orm::{ActiveModelTrait, ActiveValue::Set, SqlErr};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    ProductData,
};

use super::CreditPack;
use super::{PaymentError, Payments};
use crate::accounts::Ledger;
use crate::db::entities::payment;

/// A started checkout: where to send the buyer.
#[derive(Debug, Clone)]
pub struct StartedCheckout {
    pub session_id: String,
    pub url: String,
}

impl Payments {
    /// Creates a Checkout Session for pack `pack_index` bought by `user_id`,
    /// records it as a pending payment, and returns Stripe's payment page.
    pub async fn start_checkout(
        &self,
        ledger: &Ledger,
        user_id: i64,
        pack_index: usize,
    ) -> Result<StartedCheckout, PaymentError> {
        let client = self.stripe.as_ref().ok_or(PaymentError::Off)?;
        let pack = self
            .packs
            .get(pack_index)
            .ok_or(PaymentError::NoSuchPack(pack_index))?;
        let session = self
            .session_request(user_id, pack_index, pack)
            .send(client)
            .await
            .map_err(stripe_error)?;
        let url = session.url.clone().ok_or_else(|| {
            PaymentError::Refused("the checkout session has no payment page URL".into())
        })?;
        let started = StartedCheckout {
            session_id: session.id.to_string(),
            url,
        };
        let amount = session.amount_total.or(pack.price_cents).unwrap_or(0);
        let currency = session
            .currency
            .map(|c| c.to_string())
            .or_else(|| pack.currency.clone())
            .unwrap_or_default();
        record_pending(
            ledger,
            user_id,
            &started.session_id,
            pack.credits,
            amount,
            &currency,
        )
        .await?;
        tracing::info!(
            user_id,
            session = %started.session_id,
            credits = pack.credits,
            "checkout started"
        );
        Ok(started)
    }

    /// The `POST /v1/checkout/sessions` request for one pack.
    fn session_request(
        &self,
        user_id: i64,
        pack_index: usize,
        pack: &CreditPack,
    ) -> CreateCheckoutSession {
        let metadata = HashMap::from([
            ("user_id".to_string(), user_id.to_string()),
            ("credits".to_string(), pack.credits.to_string()),
            ("pack".to_string(), pack_index.to_string()),
        ]);
        CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Payment)
            .line_items(vec![line_item(pack)])
            .client_reference_id(user_id.to_string())
            .metadata(metadata)
            // Stripe fills in {CHECKOUT_SESSION_ID} itself when it redirects.
            .success_url(format!(
                "{}/credits/success?session_id={{CHECKOUT_SESSION_ID}}",
                self.public_url
            ))
            .cancel_url(format!("{}/credits", self.public_url))
    }
}

/// One unit of the pack: its Stripe price, or an inline price with a product name.
fn line_item(pack: &CreditPack) -> CreateCheckoutSessionLineItems {
    let mut item = CreateCheckoutSessionLineItems::new();
    item.quantity = Some(1);
    match (&pack.price_id, &pack.currency) {
        (Some(price), _) => item.price = Some(price.clone()),
        (None, currency) => {
            // The currency type is not nameable from here (async-stripe-types
            // is not a direct dependency); `parse` into the field infers it.
            let code = currency.as_deref().unwrap_or("usd");
            let Ok(currency) = code.parse();
            item.price_data = Some(CreateCheckoutSessionLineItemsPriceData {
                currency,
                product: None,
                product_data: Some(ProductData::new(format!(
                    "{} DreamStream credits",
                    pack.credits
                ))),
                recurring: None,
                tax_behavior: None,
                unit_amount: pack.price_cents,
                unit_amount_decimal: None,
            });
        }
    }
    item
}

/// Stripe's error, sorted into "it said no" and "it could not be asked".
fn stripe_error(e: stripe::StripeError) -> PaymentError {
    use stripe::StripeError as E;
    tracing::warn!(error = %e, "creating a checkout session failed");
    match e {
        E::Stripe(api, status) => PaymentError::Refused(format!(
            "{} (HTTP {status})",
            api.message.as_deref().unwrap_or("no message")
        )),
        E::Timeout => PaymentError::Unreachable("no answer in time".into()),
        E::ClientError(msg) => PaymentError::Unreachable(msg),
        E::JSONDeserialize(msg) => PaymentError::Refused(format!("unexpected answer: {msg}")),
        E::ConfigError(msg) => PaymentError::Refused(format!("client configuration: {msg}")),
    }
}

/// The pending payment row, written under the user's ledger lock so that a
/// webhook for the same session (which may come first) cannot interleave.
/// If the webhook already wrote the row, it is left as it is.
async fn record_pending(
    ledger: &Ledger,
    user_id: i64,
    session_id: &str,
    credits: i64,
    amount_cents: i64,
    currency: &str,
) -> Result<(), PaymentError> {
    let t = ledger.begin(user_id).await?;
    let inserted = payment::ActiveModel {
        user_id: Set(user_id),
        checkout_session: Set(session_id.to_string()),
        credits: Set(credits),
        amount_cents: Set(amount_cents),
        currency: Set(currency.to_string()),
        status: Set(super::fulfil::Status::Pending.as_str().to_string()),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&t.txn)
    .await;
    match inserted {
        Ok(_) => Ok(t.commit().await?),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            t.txn.rollback().await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

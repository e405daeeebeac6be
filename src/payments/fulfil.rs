//! Acting on a verified Stripe event, exactly once.
//!
//! Everything an event changes happens in one transaction that first locks
//! the buyer's ledger ([`Ledger::begin`]): the `stripe_events` row (its primary
//! key makes a redelivered event a unique violation → `Duplicate`), the ledger
//! row `stripe:{session}` (a second event for the same session finds it →
//! nothing added), and the payment's status. Concurrent deliveries of one
//! event therefore queue on the lock and all but the first see the event row.
//!
//! Events we cannot attribute (no user, credits that match neither our
//! payment row nor a configured pack, or without a row an amount that is not
//! the pack's price) are acknowledged but not recorded, and
//! logged as errors for a person to look at: Stripe re-sending them would not
//! help, and not recording them lets Stripe's "resend" work after a fix.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait,
    QueryFilter, SqlErr,
};

use super::Payments;
use super::webhook::{EventKind, Session, StripeEvent};
use crate::accounts::ledger::{Entry, Reason, Reference, Written};
use crate::accounts::{Ledger, LedgerTxn};
use crate::db::entities::{payment, stripe_event};

/// A payment's status. Events may arrive in any order, so a status only ever
/// moves forward (`rank`): a late "unpaid" never undoes "paid".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Checkout started; the buyer has not finished.
    Pending,
    /// Checkout finished with a delayed payment method; the money is not there yet.
    Processing,
    Failed,
    Paid,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Failed => "failed",
            Status::Paid => "paid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Status::Pending,
            Status::Processing,
            Status::Failed,
            Status::Paid,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    fn rank(self) -> u8 {
        match self {
            Status::Pending => 0,
            Status::Processing => 1,
            Status::Failed => 2,
            Status::Paid => 3,
        }
    }
}

/// What handling an event did (the webhook answers 200 with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Credits added; the buyer's new balance.
    Credited {
        user_id: i64,
        credits: i64,
        balance: i64,
    },
    /// A new event for a session that was already credited: nothing added.
    AlreadyCredited,
    /// This event was handled before.
    Duplicate,
    /// The payment's status was recorded; no credits (yet).
    Recorded(Status),
    /// Not ours or not actionable; the reason is logged.
    Ignored(&'static str),
}

impl Outcome {
    /// A short word for the response body and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Credited { .. } => "credited",
            Outcome::AlreadyCredited => "already_credited",
            Outcome::Duplicate => "duplicate",
            Outcome::Recorded(s) => s.as_str(),
            Outcome::Ignored(_) => "ignored",
        }
    }
}

/// What an event asks for.
enum Effect {
    Credit,
    Mark(Status),
}

/// Who bought what, according to the session.
struct Purchase<'a> {
    session: &'a Session,
    user_id: i64,
    credits: i64,
}

impl Payments {
    /// Applies a verified event. `Err` only for storage failures (the webhook
    /// then answers 500 and Stripe retries later).
    pub async fn handle_event(
        &self,
        ledger: &Ledger,
        event: &StripeEvent,
    ) -> Result<Outcome, DbErr> {
        let (session, effect) = match &event.kind {
            EventKind::Completed(s) if s.is_paid() => (s, Effect::Credit),
            EventKind::Completed(s) => (s, Effect::Mark(Status::Processing)),
            EventKind::AsyncSucceeded(s) => (s, Effect::Credit),
            EventKind::AsyncFailed(s) => (s, Effect::Mark(Status::Failed)),
            EventKind::Other => return Ok(Outcome::Ignored("event type not handled")),
        };
        let Some(purchase) = purchase_of(session) else {
            return Ok(Outcome::Ignored("session without our user id and credits"));
        };
        self.apply(ledger, event, &purchase, effect).await
    }

    /// The one transaction of an event (see the module docs).
    async fn apply(
        &self,
        ledger: &Ledger,
        event: &StripeEvent,
        p: &Purchase<'_>,
        effect: Effect,
    ) -> Result<Outcome, DbErr> {
        let t = match ledger.begin(p.user_id).await {
            Ok(t) => t,
            Err(DbErr::RecordNotFound(_)) => {
                tracing::error!(
                    user_id = p.user_id,
                    session = %p.session.id,
                    "Stripe event for a user who no longer exists"
                );
                return Ok(Outcome::Ignored("the buyer's account is gone"));
            }
            Err(e) => return Err(e),
        };
        if !record_event(&t.txn, event).await? {
            t.txn.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        let row = find_payment(&t.txn, &p.session.id).await?;
        if !self.credits_are_ours(row.as_ref(), p) {
            tracing::error!(
                user_id = p.user_id,
                credits = p.credits,
                session = %p.session.id,
                "session's credits or buyer match neither its payment row nor a configured pack"
            );
            t.txn.rollback().await?;
            return Ok(Outcome::Ignored(
                "credits or buyer do not match our records",
            ));
        }
        let outcome = match effect {
            Effect::Credit => credit(&t, row, p).await?,
            Effect::Mark(status) => Outcome::Recorded(set_status(&t.txn, row, p, status).await?),
        };
        t.commit().await?;
        Ok(outcome)
    }

    /// Trust the credits if they match the row we wrote at checkout; without
    /// one (the webhook came first), they must match the pack they name, and
    /// so must what was paid: the session's `amount_total` and `currency`
    /// equal the pack's price (a pack sold by Stripe price id has its price
    /// at Stripe, which made the session).
    fn credits_are_ours(&self, row: Option<&payment::Model>, p: &Purchase<'_>) -> bool {
        match row {
            Some(r) => r.user_id == p.user_id && r.credits == p.credits,
            None => p
                .session
                .meta("pack")
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| self.packs.get(i))
                .is_some_and(|pack| {
                    let paid_the_price = match (pack.price_cents, pack.currency.as_deref()) {
                        (Some(cents), Some(currency)) => {
                            p.session.amount_total == Some(cents)
                                && p.session
                                    .currency
                                    .as_deref()
                                    .is_some_and(|c| c.eq_ignore_ascii_case(currency))
                        }
                        _ => pack.price_id.is_some(),
                    };
                    pack.credits == p.credits && paid_the_price
                }),
        }
    }
}

/// Appends the purchase to the ledger (a second event for the same session
/// finds its reference: nothing added) and marks the payment paid.
async fn credit(
    t: &LedgerTxn,
    row: Option<payment::Model>,
    p: &Purchase<'_>,
) -> Result<Outcome, DbErr> {
    let written = t
        .append(Entry {
            user_id: p.user_id,
            delta: p.credits,
            reason: Reason::Purchase,
            reference: Reference::Stripe(p.session.id.to_string()),
        })
        .await?;
    set_status(&t.txn, row, p, Status::Paid).await?;
    Ok(match written {
        Written::Appended(balance) => Outcome::Credited {
            user_id: p.user_id,
            credits: p.credits,
            balance,
        },
        // (Insufficient cannot happen: the delta is positive.)
        Written::Duplicate(_) | Written::Insufficient(_) => Outcome::AlreadyCredited,
    })
}

/// The buyer (`client_reference_id`) and credits (`metadata.credits`) of a session.
fn purchase_of(session: &Session) -> Option<Purchase<'_>> {
    let user_id = session.client_reference_id.as_deref()?.parse().ok()?;
    let credits: i64 = session.meta("credits")?.parse().ok()?;
    (credits > 0).then_some(Purchase {
        session,
        user_id,
        credits,
    })
}

/// Records the event id; `false` if it was there already (a redelivery,
/// possibly one racing us: the unique violation is the answer, not an error).
async fn record_event(txn: &DatabaseTransaction, event: &StripeEvent) -> Result<bool, DbErr> {
    let inserted = stripe_event::ActiveModel {
        event_id: Set(event.id.clone()),
        event_type: Set(event.type_name.chars().take(128).collect()),
        received_at: Set(chrono::Utc::now()),
    }
    .insert(txn)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn find_payment(
    txn: &DatabaseTransaction,
    session_id: &str,
) -> Result<Option<payment::Model>, DbErr> {
    payment::Entity::find()
        .filter(payment::Column::CheckoutSession.eq(session_id))
        .one(txn)
        .await
}

/// Moves the payment to `status` (only forward), creating the row when the
/// webhook came before our checkout handler wrote it. Returns the status the
/// payment has now.
async fn set_status(
    txn: &DatabaseTransaction,
    row: Option<payment::Model>,
    p: &Purchase<'_>,
    status: Status,
) -> Result<Status, DbErr> {
    match row {
        Some(row) => {
            let current = Status::parse(&row.status).unwrap_or(Status::Pending);
            if status.rank() <= current.rank() {
                return Ok(current);
            }
            let mut row: payment::ActiveModel = row.into();
            row.status = Set(status.as_str().to_string());
            row.update(txn).await?;
        }
        None => {
            payment::ActiveModel {
                user_id: Set(p.user_id),
                checkout_session: Set(p.session.id.clone()),
                credits: Set(p.credits),
                amount_cents: Set(p.session.amount_total.unwrap_or(0)),
                currency: Set(p.session.currency.clone().unwrap_or_default()),
                status: Set(status.as_str().to_string()),
                created_at: Set(chrono::Utc::now()),
                ..Default::default()
            }
            .insert(txn)
            .await?;
        }
    }
    Ok(status)
}

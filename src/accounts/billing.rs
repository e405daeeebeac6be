//! Billing over the database: the owner's credits (the ledger) and the
//! streaming time they bought (`paid_time`), the actors' [`Billing`] port. A
//! credit buys a period of the *streamer's* time: every charge runs under
//! the owner's ledger lock, so racing streams and control nodes take one
//! credit between them, and a restarted stream inside a paid period takes
//! nothing.

use std::time::Duration;

use async_trait::async_trait;
use dreamstream_actors::store::{Billing, Charge, Credit, StoreError};
use dreamstream_actors::{StreamId, Username};
use sea_orm::sea_query::OnConflict;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::Accounts;
use super::ledger::{Entry, Reason, Reference, Written};
use crate::db::entities::{paid_time, stream};

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

pub struct DbBilling {
    accounts: Accounts,
}

impl DbBilling {
    pub fn new(accounts: Accounts) -> Self {
        Self { accounts }
    }

    async fn owner(&self, username: &Username) -> Result<i64, StoreError> {
        match self.accounts.find(username).await.map_err(err)? {
            Some(u) => Ok(u.id),
            None => Err(StoreError(format!("no account named {username}"))),
        }
    }
}

/// A wall-clock time as the time since the epoch (the clock
/// [`dreamstream_actors::store::next_period_start`] computes on here).
fn since_epoch(t: chrono::DateTime<chrono::Utc>) -> Duration {
    (t - chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
        .to_std()
        .unwrap_or_default()
}

/// The end of the time `owner` has paid for, if they ever paid.
async fn paid_until(
    db: &impl sea_orm::ConnectionTrait,
    owner: i64,
) -> Result<Option<Duration>, sea_orm::DbErr> {
    Ok(paid_time::Entity::find_by_id(owner)
        .one(db)
        .await?
        .map(|row| since_epoch(row.paid_until)))
}

/// What is left of the time `user_id` has paid for (zero when none runs):
/// the credits page and `/api/me` show it.
pub async fn paid_left(
    db: &impl sea_orm::ConnectionTrait,
    user_id: i64,
) -> Result<Duration, sea_orm::DbErr> {
    let now = since_epoch(chrono::Utc::now());
    Ok(paid_until(db, user_id)
        .await?
        .map_or(Duration::ZERO, |until| until.saturating_sub(now)))
}

#[async_trait]
impl Billing for DbBilling {
    async fn pay_for_now(
        &self,
        id: StreamId,
        username: &Username,
        period: Duration,
    ) -> Result<Charge, StoreError> {
        let owner = self.owner(username).await?;
        // The owner's row is locked until commit: payments for one owner
        // (any stream, any control node) happen one after another.
        let t = self.accounts.ledger.begin(owner).await.map_err(err)?;
        let now = since_epoch(chrono::Utc::now());
        let paid_until = paid_until(&t.txn, owner).await.map_err(err)?;
        if let Some(until) = paid_until.filter(|until| *until > now) {
            let balance = t.balance().await.map_err(err)?;
            t.commit().await.map_err(err)?;
            return Ok(Charge::AlreadyPaid(Credit {
                balance,
                paid_left: until - now,
            }));
        }
        // The stream's n-th charge: unique in the ledger, and what the
        // credits page names ("Stream on Dec 2, 17:51").
        let charged_before = stream::Entity::find_by_id(id.0)
            .one(&t.txn)
            .await
            .map_err(err)?
            .map(|row| row.credits_charged)
            .ok_or_else(|| StoreError(format!("stream {id} is not in the database")))?;
        let written = t
            .append(Entry {
                user_id: owner,
                delta: -1,
                reason: Reason::Stream,
                reference: Reference::Stream {
                    stream: id.0,
                    charge: charged_before as u64,
                },
            })
            .await
            .map_err(err)?;
        let balance = match written {
            Written::Appended(balance) => balance,
            Written::Insufficient(balance) => return Ok(Charge::Insufficient { balance }),
            // The row is locked and counts its charges: a duplicate means
            // the ledger and the row disagree.
            Written::Duplicate(_) => {
                return Err(StoreError(format!(
                    "stream {id}: charge {charged_before} is already in the ledger"
                )));
            }
        };
        let until = dreamstream_actors::store::next_period_start(now, paid_until, period) + period;
        let until_utc = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH
            + chrono::TimeDelta::from_std(until).map_err(err)?;
        paid_time::Entity::insert(paid_time::ActiveModel {
            user_id: Set(owner),
            paid_until: Set(until_utc),
        })
        .on_conflict(
            OnConflict::column(paid_time::Column::UserId)
                .update_column(paid_time::Column::PaidUntil)
                .to_owned(),
        )
        .exec(&t.txn)
        .await
        .map_err(err)?;
        stream::Entity::update_many()
            .col_expr(
                stream::Column::CreditsCharged,
                Expr::col(stream::Column::CreditsCharged).add(1),
            )
            .filter(stream::Column::Id.eq(id.0))
            .exec(&t.txn)
            .await
            .map_err(err)?;
        t.commit().await.map_err(err)?;
        Ok(Charge::Charged(Credit {
            balance,
            paid_left: until.saturating_sub(now),
        }))
    }

    async fn credit(&self, username: &Username) -> Result<Credit, StoreError> {
        let owner = self.owner(username).await?;
        let db = self.accounts.db();
        let balance = self.accounts.balance(owner).await.map_err(err)?;
        let paid_left = paid_left(db, owner).await.map_err(err)?;
        Ok(Credit { balance, paid_left })
    }
}

//! The actors' persistence port over the database.

use async_trait::async_trait;
use std::time::Duration;

use dreamstream_actors::store::{Charge, Credit, EndReason, StoreError, StreamStore, StreamTotals};
use dreamstream_actors::{StreamId, StyleParams, Username};
use sea_orm::sea_query::OnConflict;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::entities::{paid_time, stream};
use crate::accounts::Accounts;
use crate::accounts::ledger::{Entry, Written};

pub struct DbStreamStore {
    accounts: Accounts,
    /// This control node ([`super::node_id`]), written into every stream row.
    node: String,
}

impl DbStreamStore {
    pub fn new(accounts: Accounts, node: String) -> Self {
        Self { accounts, node }
    }

    /// Closes the streams this node left open when it last stopped without
    /// ending them (kill -9, a power cut): `crashed`, ended now. Other
    /// nodes' rows are theirs. Returns how many were closed.
    pub async fn close_unfinished(&self) -> Result<u64, sea_orm::DbErr> {
        let closed = stream::Entity::update_many()
            .col_expr(stream::Column::EndedAt, Expr::value(chrono::Utc::now()))
            .col_expr(
                stream::Column::EndReason,
                Expr::value(EndReason::Crashed.as_str()),
            )
            .filter(stream::Column::EndedAt.is_null())
            .filter(stream::Column::Node.eq(self.node.as_str()))
            .exec(self.accounts.db())
            .await?;
        Ok(closed.rows_affected)
    }

    async fn owner(&self, username: &Username) -> Result<i64, StoreError> {
        match self.accounts.find(username).await.map_err(err)? {
            Some(u) => Ok(u.id),
            None => Err(StoreError(format!("no account named {username}"))),
        }
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
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
impl StreamStore for DbStreamStore {
    async fn stream_started(
        &self,
        username: &Username,
        settings: &StyleParams,
    ) -> Result<StreamId, StoreError> {
        let owner = self.owner(username).await?;
        let row = stream::ActiveModel {
            username: Set(username.to_string()),
            user_id: Set(Some(owner)),
            credits_charged: Set(0),
            started_at: Set(chrono::Utc::now()),
            settings: Set(serde_json::to_string(settings).map_err(err)?),
            frames_in: Set(0),
            frames_out: Set(0),
            frames_dropped: Set(0),
            peak_viewers: Set(0),
            node: Set(Some(self.node.clone())),
            ..Default::default()
        };
        // Only the new id comes back (no decoding of the whole row).
        let inserted = stream::Entity::insert(row)
            .exec(self.accounts.db())
            .await
            .map_err(err)?;
        Ok(StreamId(inserted.last_insert_id))
    }

    async fn stream_ended(
        &self,
        id: StreamId,
        reason: EndReason,
        totals: &StreamTotals,
    ) -> Result<(), StoreError> {
        let Some(row) = stream::Entity::find_by_id(id.0)
            .one(self.accounts.db())
            .await
            .map_err(err)?
        else {
            return Err(StoreError(format!("stream {id} is not in the database")));
        };
        let mut row: stream::ActiveModel = row.into();
        row.ended_at = Set(Some(chrono::Utc::now()));
        row.end_reason = Set(Some(reason.as_str().to_string()));
        row.frames_in = Set(totals.frames_in as i64);
        row.frames_out = Set(totals.frames_out as i64);
        row.frames_dropped = Set(totals.frames_dropped as i64);
        row.peak_viewers = Set(totals.peak_viewers as i64);
        row.update(self.accounts.db()).await.map_err(err)?;
        Ok(())
    }

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
                reason: "stream",
                reference: &format!("stream:{id}:{charged_before}"),
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

    async fn style_request_decided(&self, request: i64, status: &str) -> Result<(), StoreError> {
        crate::community::decide_request(self.accounts.db(), request, status)
            .await
            .map_err(err)
    }
}

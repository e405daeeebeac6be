//! The actors' persistence port over the database.

use async_trait::async_trait;
use dreamstream_actors::store::{Charge, EndReason, StoreError, StreamStore, StreamTotals};
use dreamstream_actors::{StreamId, StyleParams, Username};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::entities::stream;
use crate::accounts::Accounts;
use crate::accounts::ledger::{Entry, Written};

pub struct DbStreamStore {
    accounts: Accounts,
}

impl DbStreamStore {
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

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
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
            ..Default::default()
        }
        .insert(self.accounts.db())
        .await
        .map_err(err)?;
        Ok(StreamId(row.id))
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

    async fn charge_period(
        &self,
        id: StreamId,
        username: &Username,
        period: u64,
    ) -> Result<Charge, StoreError> {
        let owner = self.owner(username).await?;
        let t = self.accounts.ledger.begin(owner).await.map_err(err)?;
        let written = t
            .append(Entry {
                user_id: owner,
                delta: -1,
                reason: "stream",
                reference: &format!("stream:{id}:{period}"),
            })
            .await
            .map_err(err)?;
        if let Written::Appended(_) = written {
            stream::Entity::update_many()
                .col_expr(
                    stream::Column::CreditsCharged,
                    Expr::col(stream::Column::CreditsCharged).add(1),
                )
                .filter(stream::Column::Id.eq(id.0))
                .exec(&t.txn)
                .await
                .map_err(err)?;
        }
        t.commit().await.map_err(err)?;
        Ok(match written {
            Written::Appended(balance) => Charge::Charged { balance },
            Written::Duplicate(balance) => Charge::AlreadyPaid { balance },
            Written::Insufficient(balance) => Charge::Insufficient { balance },
        })
    }

    async fn balance(&self, username: &Username) -> Result<i64, StoreError> {
        let owner = self.owner(username).await?;
        self.accounts.balance(owner).await.map_err(err)
    }

    async fn style_request_decided(&self, request: i64, status: &str) -> Result<(), StoreError> {
        crate::community::decide_request(self.accounts.db(), request, status)
            .await
            .map_err(err)
    }
}

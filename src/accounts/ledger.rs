//! The credit ledger: append-only rows of `delta` with a unique `reference`;
//! a user's balance is the sum. Every write goes through a [`LedgerTxn`],
//! which first locks the user's row (an `UPDATE` that changes nothing: a row
//! lock on PostgreSQL, the database write lock on SQLite) so that reading the
//! balance and appending a charge cannot interleave with another charge.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DatabaseTransaction,
    DbErr, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
};

use crate::db::entities::{credit_ledger, user};

/// One credit movement to write.
#[derive(Debug, Clone)]
pub struct Entry {
    pub user_id: i64,
    pub delta: i64,
    pub reason: Reason,
    pub reference: Reference,
}

/// Why credits moved (`credit_ledger.reason`; the credits page words it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SignupBonus,
    Purchase,
    AdminGrant,
    Stream,
}

impl Reason {
    const ALL: [Reason; 4] = [
        Reason::SignupBonus,
        Reason::Purchase,
        Reason::AdminGrant,
        Reason::Stream,
    ];

    /// The word stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignupBonus => "signup_bonus",
            Self::Purchase => "purchase",
            Self::AdminGrant => "admin_grant",
            Self::Stream => "stream",
        }
    }

    /// The reason a stored word names (`None`: a word this version does
    /// not write).
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == word)
    }
}

/// What makes an entry unique (`credit_ledger.reference`, a unique column):
/// writing the same reference twice adds nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The stream's n-th charge (`stream:{id}:{n}`).
    Stream { stream: i64, charge: u64 },
    /// A Stripe Checkout session (`stripe:{session}`).
    Stripe(String),
    /// The welcome bonus (`signup:{user}`).
    Signup(i64),
    /// A grant by hand (`grant:{user}:{random}`).
    Grant { user: i64, nonce: String },
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stream { stream, charge } => write!(f, "stream:{stream}:{charge}"),
            Self::Stripe(session) => write!(f, "stripe:{session}"),
            Self::Signup(user) => write!(f, "signup:{user}"),
            Self::Grant { user, nonce } => write!(f, "grant:{user}:{nonce}"),
        }
    }
}

impl Reference {
    /// A stored reference read back (`None` when it is not one this version
    /// writes).
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "stream" => {
                let (stream, charge) = rest.split_once(':')?;
                Some(Self::Stream {
                    stream: stream.parse().ok()?,
                    charge: charge.parse().ok()?,
                })
            }
            "stripe" => Some(Self::Stripe(rest.to_string())),
            "signup" => Some(Self::Signup(rest.parse().ok()?)),
            "grant" => {
                let (user, nonce) = rest.split_once(':')?;
                Some(Self::Grant {
                    user: user.parse().ok()?,
                    nonce: nonce.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// What happened to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Appended; the new balance.
    Appended(i64),
    /// The reference was already in the ledger: nothing written.
    Duplicate(i64),
    /// It would take the balance below zero: nothing written.
    Insufficient(i64),
}

#[derive(Clone)]
pub struct Ledger {
    db: DatabaseConnection,
}

impl Ledger {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn balance(&self, user_id: i64) -> Result<i64, DbErr> {
        balance_of(&self.db, user_id).await
    }

    /// Starts a write on `user_id`'s credits (locks the user's row).
    pub async fn begin(&self, user_id: i64) -> Result<LedgerTxn, DbErr> {
        let txn = self.db.begin().await?;
        lock_user(&txn, user_id).await?;
        Ok(LedgerTxn { txn, user_id })
    }

    /// Writes one entry in its own transaction.
    pub async fn write(&self, entry: Entry) -> Result<Written, DbErr> {
        let t = self.begin(entry.user_id).await?;
        let w = t.append(entry).await?;
        t.commit().await?;
        Ok(w)
    }

    /// The newest `limit` rows of a user.
    pub async fn history(
        &self,
        user_id: i64,
        limit: u64,
    ) -> Result<Vec<credit_ledger::Model>, DbErr> {
        use sea_orm::QueryOrder;
        credit_ledger::Entity::find()
            .filter(credit_ledger::Column::UserId.eq(user_id))
            .order_by_desc(credit_ledger::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
    }
}

/// A transaction holding the lock on one user's credits.
pub struct LedgerTxn {
    pub txn: DatabaseTransaction,
    user_id: i64,
}

impl LedgerTxn {
    pub async fn balance(&self) -> Result<i64, DbErr> {
        balance_of(&self.txn, self.user_id).await
    }

    pub async fn has_reference(&self, reference: &str) -> Result<bool, DbErr> {
        Ok(credit_ledger::Entity::find()
            .filter(credit_ledger::Column::Reference.eq(reference))
            .one(&self.txn)
            .await?
            .is_some())
    }

    /// Appends `entry` unless its reference exists or the balance would go
    /// below zero.
    pub async fn append(&self, entry: Entry) -> Result<Written, DbErr> {
        assert_eq!(
            entry.user_id, self.user_id,
            "a ledger transaction writes one user"
        );
        let balance = self.balance().await?;
        let reference = entry.reference.to_string();
        if self.has_reference(&reference).await? {
            return Ok(Written::Duplicate(balance));
        }
        if balance + entry.delta < 0 {
            return Ok(Written::Insufficient(balance));
        }
        credit_ledger::ActiveModel {
            user_id: Set(entry.user_id),
            delta: Set(entry.delta),
            reason: Set(entry.reason.as_str().to_string()),
            reference: Set(reference),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        }
        .insert(&self.txn)
        .await?;
        Ok(Written::Appended(balance + entry.delta))
    }

    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }
}

/// Locks a user's row for the rest of `txn` with an `UPDATE` that changes
/// nothing: a row lock on PostgreSQL, the database write lock on SQLite.
/// Writes that must not interleave for one user (credits, key rotation) take it first.
pub async fn lock_user(txn: &DatabaseTransaction, user_id: i64) -> Result<(), DbErr> {
    let locked = user::Entity::update_many()
        .col_expr(user::Column::IsAdmin, Expr::col(user::Column::IsAdmin))
        .filter(user::Column::Id.eq(user_id))
        .exec(txn)
        .await?;
    if locked.rows_affected == 0 {
        return Err(DbErr::RecordNotFound(format!("user {user_id}")));
    }
    Ok(())
}

async fn balance_of(db: &impl sea_orm::ConnectionTrait, user_id: i64) -> Result<i64, DbErr> {
    let sum: Option<i64> = credit_ledger::Entity::find()
        .select_only()
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(delta), 0) AS BIGINT)"),
            "balance",
        )
        .filter(credit_ledger::Column::UserId.eq(user_id))
        .into_tuple()
        .one(db)
        .await?;
    Ok(sum.unwrap_or(0))
}

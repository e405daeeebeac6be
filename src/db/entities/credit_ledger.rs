//! The `credit_ledger` table: every movement of credits, append-only.

use sea_orm::entity::prelude::*;

/// One movement of credits. Append-only; the balance is the sum of `delta`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_ledger")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: i64,
    pub delta: i64,
    pub reason: String,
    /// Unique: `stripe:{checkout session}`, `stream:{id}:{period}`, `grant:{…}`.
    #[sea_orm(unique)]
    pub reference: String,
    pub created_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

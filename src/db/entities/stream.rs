//! The `streams` table: one row per stream, its end and its totals.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "streams")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub username: String,
    pub started_at: ChronoDateTimeUtc,
    pub ended_at: Option<ChronoDateTimeUtc>,
    pub end_reason: Option<String>,
    /// The style the stream started with (JSON `StyleParams`).
    pub settings: String,
    pub frames_in: i64,
    pub frames_out: i64,
    pub frames_dropped: i64,
    pub peak_viewers: i64,
    /// The owner (set for every stream since accounts exist).
    pub user_id: Option<i64>,
    pub credits_charged: i64,
    /// The control node that ran it (`db::node_id`), so that node can close
    /// what it left open after a crash; `None` for rows from before.
    pub node: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

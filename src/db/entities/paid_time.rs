//! The `paid_time` table: the end of each user's paid streaming time.

use sea_orm::entity::prelude::*;

/// The end of the streaming time a user has paid for: a credit buys a period
/// of the streamer's time (not of one stream), so going live again before
/// `paid_until` costs nothing.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "paid_time")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    pub paid_until: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

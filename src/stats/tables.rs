//! The tables the audience numbers use: the in-memory twin's saved sketches
//! and counters, and the audience columns of `streams` (which the shared
//! `stream` entity does not carry).

use dreamstream_actors::StreamId;
use sea_orm::sea_query::{Alias, Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::ms_to_time;
use crate::audience::StreamAudience;
use crate::db::entities::stream;

/// HyperLogLog sketches by key (`ips:all`, `ips:day:20261123`, `ips:stream:42`).
pub mod sketch {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audience_sketches")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// [`crate::stats::hll::Hll::encode`]d registers.
        pub data: Vec<u8>,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Counters by key (`peak` with its time, `tune_ins:all`, `tune_ins:day:…`).
pub mod counter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audience_counters")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: i64,
        pub at: Option<ChronoDateTimeUtc>,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub const UNIQUE_VIEWERS: &str = "unique_viewers";
pub const PEAK_AT: &str = "peak_at";

/// Keeps a stream's audience in its row. Only ever raises the numbers, so a
/// late or repeated write cannot lower what an earlier one stored.
pub async fn save_stream(db: &impl ConnectionTrait, a: &StreamAudience) -> Result<(), DbErr> {
    let id = StreamId(a.stream_id);
    if let Some(at) = a.peak.at_ms.and_then(ms_to_time) {
        stream::Entity::update_many()
            .col_expr(
                stream::Column::PeakViewers,
                Expr::value(a.peak.viewers as i64),
            )
            .col_expr(Alias::new(PEAK_AT), Expr::value(at))
            .filter(stream::Column::Id.eq(id.0))
            .filter(stream::Column::PeakViewers.lte(a.peak.viewers as i64))
            .exec(db)
            .await?;
    }
    stream::Entity::update_many()
        .col_expr(Alias::new(UNIQUE_VIEWERS), Expr::value(a.unique_ips as i64))
        .filter(stream::Column::Id.eq(id.0))
        .filter(Expr::col(Alias::new(UNIQUE_VIEWERS)).lt(a.unique_ips as i64))
        .exec(db)
        .await?;
    Ok(())
}

//! Everything the admin dashboard and `dreamstream admin stats` show, as one
//! [`Overview`]: the audience ([`super::Stats`]), the live streams and the GPU
//! cluster (from the control plane, when there is one) and what the database
//! knows (streams created, the most watched and the latest streams, users and
//! credits, payments).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Duration as Days, Utc};
use dreamstream_actors::StreamId;
use dreamstream_actors::scheduler::{SchedulerSnapshot, WorkerState};
use sea_orm::sea_query::{Alias, Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::Serialize;

use super::{Stats, last_days, ms_to_time, now_ms};
use crate::audience::{Audience, AudienceReport, Peak, Sample};
use crate::control::ControlPlane;
use crate::db::entities::{credit_ledger, payment, stream, user};

/// Rows in the dashboard's lists.
const ROWS: u64 = 10;
/// A worker that vanished stays on the dashboard as `lost` this long.
const REMEMBER_LOST_MS: i64 = 15 * 60_000;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    pub generated_at_ms: i64,
    pub audience: AudienceReport,
    pub live: Vec<LiveRow>,
    pub streams_created: Created,
    /// The most watched streams ever (by peak viewers).
    pub top_streams: Vec<StreamRow>,
    pub recent_streams: Vec<StreamRow>,
    pub workers: Vec<WorkerView>,
    pub worker_states: WorkerStates,
    /// Streams waiting for a worker.
    pub queue: Vec<QueueRow>,
    pub jobs_dispatched: u64,
    /// Set when the scheduler or the cluster watcher did not answer: the
    /// workers and queue above are then unknown, not empty.
    pub control_plane_error: Option<String>,
    pub users: UsersView,
    pub payments: Vec<PaymentRow>,
    pub history: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Created {
    pub today: u64,
    pub week: u64,
    pub all: u64,
}

/// A live stream in the dashboard's table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveRow {
    pub stream_id: i64,
    pub username: String,
    pub started_at_ms: i64,
    pub viewers: u64,
    pub peak: Peak,
    pub unique_ips: u64,
    pub fps_in: f64,
    pub fps_out: f64,
    pub dropped_pct: f64,
    pub latency_p50_ms: Option<f64>,
    pub credits_burned: u64,
    pub style: String,
    pub broadcaster_connected: bool,
}

/// A stream from the database (ended, or live when read without a server).
#[derive(Debug, Clone, Default, Serialize, FromQueryResult)]
pub struct StreamRow {
    pub id: i64,
    pub username: String,
    #[serde(serialize_with = "ser_time")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_opt_time")]
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub peak_viewers: i64,
    #[serde(serialize_with = "ser_opt_time")]
    pub peak_at: Option<DateTime<Utc>>,
    pub unique_viewers: i64,
    pub credits_charged: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub node: String,
    pub processor: String,
    pub device: String,
    /// Models it advertises (diffusion model ids; the network for neural-style).
    pub models: Vec<String>,
    pub state: WorkerState,
    pub capacity: u32,
    pub in_flight: u32,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub job_p50_ms: f64,
    pub busy_pct: f64,
    /// Age of the last heartbeat answered (remote workers), ms.
    pub last_heartbeat_ms: Option<f64>,
    /// When it was last seen (lost workers).
    pub lost_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WorkerStates {
    pub busy: u64,
    pub idle: u64,
    pub lost: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueRow {
    pub stream_id: i64,
    pub username: String,
    pub waiting_ms: f64,
    pub needs: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UsersView {
    pub total: u64,
    pub admins: u64,
    /// Credits held by all users.
    pub credits_outstanding: i64,
    pub credits_burned_today: i64,
    pub credits_burned_all: i64,
    pub recent: Vec<UserRow>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub is_admin: bool,
    pub created_at_ms: i64,
    pub balance: i64,
    pub streams: i64,
    pub credits_burned: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PaymentRow {
    pub id: i64,
    pub username: String,
    pub credits: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub status: String,
    pub created_at_ms: i64,
}

fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(t.timestamp_millis())
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&t.timestamp_millis()),
        None => s.serialize_none(),
    }
}

/// Workers seen recently, so one that vanished shows as `lost`.
#[derive(Default)]
pub struct ClusterMemory {
    seen: HashMap<String, (WorkerView, i64)>,
}

impl ClusterMemory {
    /// Remembers the workers of `snap` as seen at `now` and forgets the ones
    /// lost long ago. Only the sampler ([`super::Stats::watch`]) calls this:
    /// reading the dashboard or `/metrics` changes nothing.
    pub fn note(&mut self, snap: &SchedulerSnapshot, now: i64) {
        for w in current(snap, &[]) {
            self.seen.insert(w.id.clone(), (w, now));
        }
        self.seen
            .retain(|_, (_, seen)| now - *seen < REMEMBER_LOST_MS);
    }

    /// The workers now, plus the ones remembered that are gone (lost).
    pub fn view(
        &self,
        snap: &SchedulerSnapshot,
        remote: &[crate::cluster::watcher::RemoteWorker],
        now: i64,
    ) -> Vec<WorkerView> {
        let mut out = current(snap, remote);
        for (id, (w, seen)) in &self.seen {
            if now - *seen < REMEMBER_LOST_MS && !out.iter().any(|o| &o.id == id) {
                out.push(WorkerView {
                    state: WorkerState::Lost,
                    in_flight: 0,
                    lost_at_ms: Some(*seen),
                    ..w.clone()
                });
            }
        }
        let lost = |w: &WorkerView| w.state == WorkerState::Lost;
        out.sort_by(|a, b| (lost(a), &a.id).cmp(&(lost(b), &b.id)));
        out
    }
}

/// The scheduler's workers as the dashboard shows them.
fn current(
    snap: &SchedulerSnapshot,
    remote: &[crate::cluster::watcher::RemoteWorker],
) -> Vec<WorkerView> {
    snap.workers
        .iter()
        .map(|w| WorkerView {
            id: w.id.clone(),
            node: w.node.clone(),
            processor: w.processor.clone(),
            device: w.device.clone(),
            models: w.models.clone(),
            state: w.state,
            capacity: w.capacity,
            in_flight: w.in_flight,
            jobs_done: w.jobs_done,
            jobs_failed: w.jobs_failed,
            job_p50_ms: w.job_p50_ms,
            busy_pct: w.busy_fraction * 100.0,
            last_heartbeat_ms: remote
                .iter()
                .find(|r| r.id == w.id)
                .map(|r| r.last_heartbeat_ms),
            lost_at_ms: None,
        })
        .collect()
}

impl Overview {
    /// Collects everything; without a control plane (the CLI) the live
    /// streams are the database's open rows and the cluster is unknown.
    pub async fn collect(
        db: &DatabaseConnection,
        stats: &Stats,
        control: Option<&ControlPlane>,
    ) -> anyhow::Result<Self> {
        let now = now_ms();
        let mut o = Overview {
            generated_at_ms: now,
            ..Default::default()
        };
        let live = match control {
            Some(c) => c.list().await,
            None => Vec::new(),
        };
        let ids: Vec<StreamId> = if control.is_some() {
            live.iter().map(|s| s.id).collect()
        } else {
            open_streams(db)
                .await?
                .iter()
                .map(|s| StreamId(s.id))
                .collect()
        };
        o.audience = stats.report(&ids).await?;
        let audience: HashMap<i64, _> = o
            .audience
            .streams
            .iter()
            .map(|a| (a.stream_id, *a))
            .collect();
        if let Some(c) = control {
            for s in &live {
                let snap = s.snapshot();
                let a = audience.get(&s.id.0).copied().unwrap_or_default();
                let rates = stats.rates(s.id).unwrap_or_default();
                let dropped = s.counters.dropped();
                let mut peak = a.peak;
                peak.raise(snap.peak_viewers, now);
                o.live.push(LiveRow {
                    stream_id: s.id.0,
                    username: s.username.to_string(),
                    started_at_ms: s.started_at_ms as i64,
                    viewers: snap.viewers as u64,
                    peak,
                    unique_ips: a.unique_ips,
                    fps_in: rates.fps_in,
                    fps_out: rates.fps_out,
                    dropped_pct: if snap.frames_in > 0 {
                        dropped as f64 * 100.0 / snap.frames_in as f64
                    } else {
                        0.0
                    },
                    latency_p50_ms: rates.latency_p50_ms,
                    credits_burned: s.counters.credits_charged.load(Ordering::Relaxed),
                    style: dreamstream_actors::presets::style_name(&snap.settings),
                    broadcaster_connected: snap.broadcaster_connected,
                });
            }
            match (c.scheduler_snapshot().await, c.remote_workers().await) {
                (Ok(snap), Ok(remote)) => {
                    o.workers = stats.workers(&snap, &remote, now);
                    o.queue = snap
                        .ready
                        .iter()
                        .map(|r| QueueRow {
                            stream_id: r.stream_id,
                            username: live
                                .iter()
                                .find(|s| s.id.0 == r.stream_id)
                                .map(|s| s.username.to_string())
                                .unwrap_or_default(),
                            waiting_ms: r.waiting_ms,
                            needs: r.needs.clone(),
                        })
                        .collect();
                    o.jobs_dispatched = snap.jobs_dispatched;
                }
                // Say so rather than show an empty cluster.
                (Err(e), _) | (_, Err(e)) => {
                    o.control_plane_error = Some(format!("control plane not answering: {e}"));
                }
            }
        } else {
            for s in open_streams(db).await? {
                let a = audience.get(&s.id).copied().unwrap_or_default();
                o.live.push(LiveRow {
                    stream_id: s.id,
                    username: s.username.clone(),
                    started_at_ms: s.started_at.timestamp_millis(),
                    viewers: a.viewers,
                    peak: a.peak,
                    unique_ips: a.unique_ips,
                    credits_burned: s.credits_charged.clamp(0, i64::MAX) as u64,
                    ..Default::default()
                });
            }
        }
        for w in &o.workers {
            match w.state {
                WorkerState::Busy => o.worker_states.busy += 1,
                WorkerState::Lost => o.worker_states.lost += 1,
                WorkerState::Idle => o.worker_states.idle += 1,
            }
        }
        o.streams_created = streams_created(db, now).await?;
        o.top_streams = streams_query()
            .filter(stream::Column::PeakViewers.gt(0))
            .order_by_desc(stream::Column::PeakViewers)
            .order_by_desc(stream::Column::Id)
            .limit(5)
            .into_model::<StreamRow>()
            .all(db)
            .await?;
        o.recent_streams = streams_query()
            .filter(stream::Column::EndedAt.is_not_null())
            .order_by_desc(stream::Column::EndedAt)
            .order_by_desc(stream::Column::Id)
            .limit(ROWS)
            .into_model::<StreamRow>()
            .all(db)
            .await?;
        o.users = users(db, now).await?;
        o.payments = payments(db).await?;
        o.history = stats.history();
        Ok(o)
    }
}

fn streams_query() -> sea_orm::Select<stream::Entity> {
    stream::Entity::find()
        .select_only()
        .columns([
            stream::Column::Id,
            stream::Column::Username,
            stream::Column::StartedAt,
            stream::Column::EndedAt,
            stream::Column::EndReason,
            stream::Column::PeakViewers,
            stream::Column::CreditsCharged,
        ])
        .column_as(Expr::col(Alias::new(super::PEAK_AT)), super::PEAK_AT)
        .column_as(
            Expr::col(Alias::new(super::UNIQUE_VIEWERS)),
            super::UNIQUE_VIEWERS,
        )
}

async fn open_streams(db: &DatabaseConnection) -> Result<Vec<StreamRow>, DbErr> {
    streams_query()
        .filter(stream::Column::EndedAt.is_null())
        .order_by_asc(stream::Column::StartedAt)
        .into_model::<StreamRow>()
        .all(db)
        .await
}

/// Midnight (UTC) of the day of `ms`.
fn midnight(ms: i64) -> DateTime<Utc> {
    let t = ms_to_time(ms).unwrap_or_default();
    t.date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|n| n.and_utc())
        .unwrap_or(t)
}

async fn streams_created(db: &DatabaseConnection, now: i64) -> Result<Created, DbErr> {
    let today = midnight(now);
    // The same seven UTC days as the distinct IPs of the week.
    let week = today - Days::days(last_days(now, 7).len() as i64 - 1);
    let count = |since: Option<DateTime<Utc>>| {
        let mut q = stream::Entity::find();
        if let Some(s) = since {
            q = q.filter(stream::Column::StartedAt.gte(s));
        }
        q.count(db)
    };
    Ok(Created {
        today: count(Some(today)).await?,
        week: count(Some(week)).await?,
        all: count(None).await?,
    })
}

async fn credit_sum(
    db: &DatabaseConnection,
    filter: impl FnOnce(
        sea_orm::Select<credit_ledger::Entity>,
    ) -> sea_orm::Select<credit_ledger::Entity>,
) -> Result<i64, DbErr> {
    let sum: Option<i64> = filter(credit_ledger::Entity::find())
        .select_only()
        .column_as(Expr::cust("CAST(COALESCE(SUM(delta), 0) AS BIGINT)"), "s")
        .into_tuple()
        .one(db)
        .await?;
    Ok(sum.unwrap_or(0))
}

async fn users(db: &DatabaseConnection, now: i64) -> Result<UsersView, DbErr> {
    let today = midnight(now);
    let mut view = UsersView {
        total: user::Entity::find().count(db).await?,
        admins: user::Entity::find()
            .filter(user::Column::IsAdmin.eq(true))
            .count(db)
            .await?,
        credits_outstanding: credit_sum(db, |q| q).await?,
        credits_burned_today: -credit_sum(db, |q| {
            q.filter(credit_ledger::Column::Reason.eq("stream"))
                .filter(credit_ledger::Column::CreatedAt.gte(today))
        })
        .await?,
        credits_burned_all: -credit_sum(db, |q| {
            q.filter(credit_ledger::Column::Reason.eq("stream"))
        })
        .await?,
        recent: Vec::new(),
    };
    let recent: Vec<(i64, String, bool, DateTime<Utc>)> = user::Entity::find()
        .select_only()
        .columns([
            user::Column::Id,
            user::Column::Username,
            user::Column::IsAdmin,
            user::Column::CreatedAt,
        ])
        .order_by_desc(user::Column::CreatedAt)
        .order_by_desc(user::Column::Id)
        .limit(ROWS)
        .into_tuple()
        .all(db)
        .await?;
    let ids: Vec<i64> = recent.iter().map(|r| r.0).collect();
    let per_user = |rows: Vec<(i64, i64)>| rows.into_iter().collect::<HashMap<i64, i64>>();
    let balances = per_user(
        credit_ledger::Entity::find()
            .select_only()
            .column(credit_ledger::Column::UserId)
            .column_as(Expr::cust("CAST(COALESCE(SUM(delta), 0) AS BIGINT)"), "s")
            .filter(credit_ledger::Column::UserId.is_in(ids.clone()))
            .group_by(credit_ledger::Column::UserId)
            .into_tuple()
            .all(db)
            .await?,
    );
    let burned = per_user(
        credit_ledger::Entity::find()
            .select_only()
            .column(credit_ledger::Column::UserId)
            .column_as(Expr::cust("CAST(COALESCE(-SUM(delta), 0) AS BIGINT)"), "s")
            .filter(credit_ledger::Column::UserId.is_in(ids.clone()))
            .filter(credit_ledger::Column::Reason.eq("stream"))
            .group_by(credit_ledger::Column::UserId)
            .into_tuple()
            .all(db)
            .await?,
    );
    let streams = per_user(
        stream::Entity::find()
            .select_only()
            .column(stream::Column::UserId)
            .column_as(Expr::col(stream::Column::Id).count(), "n")
            .filter(stream::Column::UserId.is_in(ids))
            .group_by(stream::Column::UserId)
            .into_tuple::<(Option<i64>, i64)>()
            .all(db)
            .await?
            .into_iter()
            .filter_map(|(u, n)| u.map(|u| (u, n)))
            .collect(),
    );
    view.recent = recent
        .into_iter()
        .map(|(id, username, is_admin, created_at)| UserRow {
            id,
            username,
            is_admin,
            created_at_ms: created_at.timestamp_millis(),
            balance: balances.get(&id).copied().unwrap_or(0),
            streams: streams.get(&id).copied().unwrap_or(0),
            credits_burned: burned.get(&id).copied().unwrap_or(0),
        })
        .collect();
    Ok(view)
}

async fn payments(db: &DatabaseConnection) -> Result<Vec<PaymentRow>, DbErr> {
    let rows = payment::Entity::find()
        .order_by_desc(payment::Column::CreatedAt)
        .order_by_desc(payment::Column::Id)
        .limit(ROWS)
        .all(db)
        .await?;
    let ids: Vec<i64> = rows.iter().map(|p| p.user_id).collect();
    let names: HashMap<i64, String> = user::Entity::find()
        .select_only()
        .columns([user::Column::Id, user::Column::Username])
        .filter(user::Column::Id.is_in(ids))
        .into_tuple::<(i64, String)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    Ok(rows
        .into_iter()
        .map(|p| PaymentRow {
            id: p.id,
            username: names.get(&p.user_id).cloned().unwrap_or_default(),
            credits: p.credits,
            amount_cents: p.amount_cents,
            currency: p.currency,
            status: p.status,
            created_at_ms: p.created_at.timestamp_millis(),
        })
        .collect())
}

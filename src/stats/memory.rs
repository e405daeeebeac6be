//! The in-memory twin of the Redis audience numbers (the embedded default):
//! HyperLogLog sketches per day, per live stream and for all time, the
//! platform's peak and the tune-ins, behind one mutex. [`MemoryStore::save`]
//! writes what changed to `audience_sketches` / `audience_counters`, and
//! [`MemoryStore::load`] reads it back, so a restart keeps the numbers (up to
//! the last save: `audience.flush_secs`, and every stream end).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use anyhow::Context;
use dreamstream_actors::StreamId;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, TransactionTrait,
};

use super::hll::Hll;
use super::tables::{counter, sketch};
use super::{KEEP_DAYS, day_of, last_days, lock, ms_to_time};
use crate::audience::{AudienceReport, Peak, StreamAudience};

const ALL: &str = "ips:all";
const DAY: &str = "ips:day:";
const STREAM: &str = "ips:stream:";
const PEAK: &str = "peak";
const TUNE_INS: &str = "tune_ins:all";
const TUNE_INS_DAY: &str = "tune_ins:day:";

#[derive(Default)]
struct State {
    all: Hll,
    days: BTreeMap<String, Hll>,
    streams: HashMap<i64, Hll>,
    peak: Peak,
    tune_ins: u64,
    tune_ins_days: BTreeMap<String, u64>,
    /// Keys changed since the last save, and keys to delete.
    dirty: HashSet<String>,
    gone: HashSet<String>,
}

impl State {
    /// Forgets days older than the ones kept.
    fn expire_days(&mut self, now_ms: i64) {
        let Some(oldest) = last_days(now_ms, KEEP_DAYS).pop() else {
            return;
        };
        let old: Vec<String> = self
            .days
            .keys()
            .chain(self.tune_ins_days.keys())
            .filter(|d| d.as_str() < oldest.as_str())
            .cloned()
            .collect();
        for d in old {
            if self.days.remove(&d).is_some() {
                self.gone.insert(format!("{DAY}{d}"));
            }
            if self.tune_ins_days.remove(&d).is_some() {
                self.gone.insert(format!("{TUNE_INS_DAY}{d}"));
            }
        }
    }
}

pub struct MemoryStore {
    db: DatabaseConnection,
    state: Mutex<State>,
}

impl MemoryStore {
    /// Reads the saved state. A serving node drops the sketches of streams
    /// from before it started (those streams have ended; their numbers are in
    /// their rows).
    pub async fn load(db: DatabaseConnection, serving: bool) -> anyhow::Result<Self> {
        let mut st = State::default();
        for row in sketch::Entity::find().all(&db).await? {
            let Some(h) = Hll::decode(&row.data) else {
                tracing::warn!(key = row.key, "ignoring an unreadable audience sketch");
                continue;
            };
            if row.key == ALL {
                st.all = h;
            } else if let Some(day) = row.key.strip_prefix(DAY) {
                st.days.insert(day.to_string(), h);
            } else if let Some(id) = row.key.strip_prefix(STREAM) {
                match id.parse() {
                    Ok(id) if !serving => {
                        st.streams.insert(id, h);
                    }
                    _ => {
                        st.gone.insert(row.key.clone());
                    }
                }
            }
        }
        for row in counter::Entity::find().all(&db).await? {
            let value = row.value.max(0) as u64;
            if row.key == PEAK {
                st.peak = Peak {
                    viewers: value,
                    at_ms: row.at.map(|t| t.timestamp_millis()),
                };
            } else if row.key == TUNE_INS {
                st.tune_ins = value;
            } else if let Some(day) = row.key.strip_prefix(TUNE_INS_DAY) {
                st.tune_ins_days.insert(day.to_string(), value);
            }
        }
        st.expire_days(super::now_ms());
        Ok(Self {
            db,
            state: Mutex::new(st),
        })
    }

    pub fn joined(&self, stream: StreamId, hash: Option<u64>, total: u64, at: i64) {
        let day = day_of(at);
        let mut st = lock(&self.state);
        st.tune_ins += 1;
        *st.tune_ins_days.entry(day.clone()).or_default() += 1;
        st.dirty.insert(TUNE_INS.into());
        st.dirty.insert(format!("{TUNE_INS_DAY}{day}"));
        if st.peak.raise(total, at) {
            st.dirty.insert(PEAK.into());
        }
        if let Some(h) = hash {
            if st.all.add(h) {
                st.dirty.insert(ALL.into());
            }
            if st.days.entry(day.clone()).or_default().add(h) {
                st.dirty.insert(format!("{DAY}{day}"));
            }
            if st.streams.entry(stream.0).or_default().add(h) {
                st.dirty.insert(format!("{STREAM}{}", stream.0));
            }
        }
    }

    /// Forgets a stream's sketch; its distinct IPs.
    pub fn stream_ended(&self, stream: StreamId) -> u64 {
        let mut st = lock(&self.state);
        let key = format!("{STREAM}{}", stream.0);
        st.dirty.remove(&key);
        match st.streams.remove(&stream.0) {
            Some(h) => {
                st.gone.insert(key);
                h.count()
            }
            None => 0,
        }
    }

    pub fn report(
        &self,
        viewers_now: u64,
        mut streams: Vec<StreamAudience>,
        now_ms: i64,
    ) -> AudienceReport {
        let mut st = lock(&self.state);
        st.expire_days(now_ms);
        let days = last_days(now_ms, 7);
        let mut week = Hll::new();
        for d in &days {
            if let Some(h) = st.days.get(d) {
                week.merge(h);
            }
        }
        for s in &mut streams {
            s.unique_ips = st.streams.get(&s.stream_id).map_or(0, Hll::count);
        }
        AudienceReport {
            backend: "memory".into(),
            viewers_now,
            peak: st.peak,
            unique_ips_today: st.days.get(&days[0]).map_or(0, Hll::count),
            unique_ips_7d: week.count(),
            unique_ips_all: st.all.count(),
            tune_ins_today: st.tune_ins_days.get(&days[0]).copied().unwrap_or(0),
            tune_ins_all: st.tune_ins,
            streams,
        }
    }

    /// Writes the keys that changed since the last save (in one transaction).
    pub async fn save(&self) -> anyhow::Result<()> {
        let now = chrono::Utc::now();
        let (sketches, counters, gone) = {
            let mut st = lock(&self.state);
            st.expire_days(now.timestamp_millis());
            let dirty: Vec<String> = st.dirty.drain().collect();
            let gone: Vec<String> = st.gone.drain().collect();
            let mut sketches = Vec::new();
            let mut counters = Vec::new();
            for key in dirty {
                let h = if key == ALL {
                    Some(&st.all)
                } else if let Some(d) = key.strip_prefix(DAY) {
                    st.days.get(d)
                } else if let Some(id) = key.strip_prefix(STREAM) {
                    id.parse().ok().and_then(|id: i64| st.streams.get(&id))
                } else {
                    None
                };
                if let Some(h) = h {
                    sketches.push((key, h.encode()));
                    continue;
                }
                let (value, at) = if key == PEAK {
                    (st.peak.viewers, st.peak.at_ms.and_then(ms_to_time))
                } else if key == TUNE_INS {
                    (st.tune_ins, None)
                } else if let Some(d) = key.strip_prefix(TUNE_INS_DAY) {
                    (st.tune_ins_days.get(d).copied().unwrap_or(0), None)
                } else {
                    continue;
                };
                counters.push((key, value as i64, at));
            }
            (sketches, counters, gone)
        };
        if sketches.is_empty() && counters.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let written = self.write(&sketches, &counters, &gone, now).await;
        if written.is_err() {
            // Try again at the next save.
            let mut st = lock(&self.state);
            st.dirty.extend(sketches.into_iter().map(|(k, _)| k));
            st.dirty.extend(counters.into_iter().map(|(k, _, _)| k));
            st.gone.extend(gone);
        }
        written
    }

    async fn write(
        &self,
        sketches: &[(String, Vec<u8>)],
        counters: &[(String, i64, Option<chrono::DateTime<chrono::Utc>>)],
        gone: &[String],
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        let txn = self.db.begin().await?;
        for (key, data) in sketches {
            sketch::Entity::insert(sketch::ActiveModel {
                key: Set(key.clone()),
                data: Set(data.clone()),
                updated_at: Set(now),
            })
            .on_conflict(
                OnConflict::column(sketch::Column::Key)
                    .update_columns([sketch::Column::Data, sketch::Column::UpdatedAt])
                    .to_owned(),
            )
            .exec(&txn)
            .await
            .with_context(|| format!("failed to save the sketch {key}"))?;
        }
        for (key, value, at) in counters {
            counter::Entity::insert(counter::ActiveModel {
                key: Set(key.clone()),
                value: Set(*value),
                at: Set(*at),
                updated_at: Set(now),
            })
            .on_conflict(
                OnConflict::column(counter::Column::Key)
                    .update_columns([
                        counter::Column::Value,
                        counter::Column::At,
                        counter::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec(&txn)
            .await
            .with_context(|| format!("failed to save the counter {key}"))?;
        }
        if !gone.is_empty() {
            sketch::Entity::delete_many()
                .filter(sketch::Column::Key.is_in(gone.iter().cloned()))
                .exec(&txn)
                .await?;
            counter::Entity::delete_many()
                .filter(counter::Column::Key.is_in(gone.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }
}

//! The part of a live stream that outlives its actor: viewers, the broadcaster,
//! the live style, counters and the last output frame. The supervisor owns it;
//! a restarted [`super::StreamActor`] picks it up, so a crash costs the frames
//! in flight and nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ractor::ActorRef;
use serde::Serialize;

use super::StreamMsg;
use crate::frame::OutputFrame;
use crate::ids::{StreamId, Username, ViewerId};
use crate::sink::{Delivery, StreamEvent, ViewerSink};
use crate::store::{EndReason, StreamTotals};
use crate::style::StyleParams;

/// Counters of one stream.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Input frames replaced in the slot by a fresher one before dispatch.
    pub dropped_replaced: AtomicU64,
    /// Results older than one already delivered (several workers on one stream).
    pub dropped_late: AtomicU64,
    /// Jobs that failed (bad frame, worker error, worker lost, deadline).
    pub dropped_failed: AtomicU64,
    /// Frames not delivered to one viewer because its buffer was full.
    pub viewer_drops: AtomicU64,
    pub restarts: AtomicU64,
    /// Credits charged by the meter (the first period is charged at start).
    pub credits_charged: AtomicU64,
}

impl StreamCounters {
    pub fn dropped(&self) -> u64 {
        self.dropped_replaced.load(Ordering::Relaxed)
            + self.dropped_late.load(Ordering::Relaxed)
            + self.dropped_failed.load(Ordering::Relaxed)
    }
}

/// What pages, the dashboard and tests see of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSnapshot {
    pub stream_id: i64,
    pub username: String,
    pub started_at_ms: u64,
    pub viewers: usize,
    pub peak_viewers: u64,
    pub broadcaster_connected: bool,
    pub frames_in: u64,
    pub frames_out: u64,
    pub dropped_replaced: u64,
    pub dropped_late: u64,
    pub dropped_failed: u64,
    pub viewer_drops: u64,
    pub restarts: u64,
    pub last_output_seq: Option<u64>,
    pub settings: StyleParams,
}

pub struct StreamShared {
    pub id: StreamId,
    pub username: Username,
    pub started_at_ms: u64,
    /// The meter's clock (tokio time, so tests can pause it).
    pub started_at: tokio::time::Instant,
    /// The owner's credit as the meter last heard it; kept here so that a
    /// restarted actor and a reconnecting broadcaster start from it.
    credit: Mutex<Option<CreditState>>,
    pub counters: StreamCounters,
    /// Comments/requests switches, the style-request queue, the style history.
    pub community: super::community::Community,
    actor: RwLock<Option<ActorRef<StreamMsg>>>,
    viewers: Mutex<Viewers>,
    /// (session token, sink) of the connected broadcaster.
    broadcaster: Mutex<Option<(u64, Box<dyn ViewerSink>)>>,
    /// Taps on the output that are not viewers (the WebRTC encoder): they
    /// get every output frame, do not count as viewers, and are closed
    /// when the stream ends.
    taps: Mutex<Vec<Arc<dyn ViewerSink>>>,
    settings: RwLock<StyleParams>,
    last_output: Mutex<Option<Arc<OutputFrame>>>,
    peak_viewers: AtomicU64,
    /// Joins or leaves not yet announced (see `take_presence_change`).
    presence_changed: AtomicBool,
    /// The next input frame's number (see `number_input`).
    next_input_seq: AtomicU64,
    end_reason: Mutex<Option<EndReason>>,
}

/// The owner's credit as the meter last heard it.
#[derive(Debug, Clone, Copy)]
pub struct CreditState {
    pub balance: i64,
    /// When the paid period runs out (the meter's clock).
    pub paid_until: tokio::time::Instant,
    /// What one credit buys.
    pub period: std::time::Duration,
}

/// How far ahead the meter plans: an unmetered store answers "paid for
/// ever", which must not overflow the clock.
const PLANNING_HORIZON: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl CreditState {
    /// The state after the store answered `credit` just now.
    pub fn from_credit(credit: crate::store::Credit, period: std::time::Duration) -> Self {
        Self {
            balance: credit.balance,
            paid_until: tokio::time::Instant::now() + credit.paid_left.min(PLANNING_HORIZON),
            period,
        }
    }

    /// The `credits` event for the streamer, as of now: the balance and the
    /// streaming time left (the rest of the paid period plus what the
    /// balance buys).
    pub fn event(&self) -> StreamEvent {
        let period_left = self
            .paid_until
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs();
        let bought = (self.balance.max(0) as u64).saturating_mul(self.period.as_secs());
        StreamEvent::Credits {
            balance: self.balance,
            seconds_left: period_left.saturating_add(bought),
            period_left_secs: period_left,
            period_secs: self.period.as_secs(),
        }
    }
}

type ViewerList = Arc<[(ViewerId, Arc<dyn ViewerSink>)]>;

#[derive(Default)]
struct Viewers {
    next: u64,
    sinks: HashMap<ViewerId, Arc<dyn ViewerSink>>,
    /// The viewer of each browser tab (its client id), so a refresh replaces
    /// the old connection instead of counting twice.
    clients: HashMap<String, ViewerId>,
    /// Viewers in `sinks` that receive events but are not counted (a
    /// WebSocket viewer with its pictures off: its browser plays WHEP,
    /// which counts). Always a subset of `sinks`' keys.
    uncounted: HashSet<ViewerId>,
    /// `sinks` as a list, rebuilt after a change: the fan-out iterates it
    /// without holding the lock (joins never wait for a frame's fan-out).
    list: Option<ViewerList>,
}

impl Viewers {
    fn list(&mut self) -> ViewerList {
        self.list
            .get_or_insert_with(|| {
                self.sinks
                    .iter()
                    .map(|(id, sink)| (*id, sink.clone()))
                    .collect()
            })
            .clone()
    }

    fn insert(&mut self, id: ViewerId, sink: Arc<dyn ViewerSink>, counted: bool) {
        if !counted {
            self.uncounted.insert(id);
        }
        self.sinks.insert(id, sink);
        self.list = None;
    }

    /// Removes a viewer; `Some(counted)` if it was there.
    fn remove(&mut self, id: &ViewerId) -> Option<bool> {
        let removed = self.sinks.remove(id);
        if removed.is_some() {
            self.list = None;
        }
        removed.map(|_| !self.uncounted.remove(id))
    }

    fn counted(&self) -> usize {
        self.sinks.len() - self.uncounted.len()
    }
}

impl StreamShared {
    pub fn new(id: StreamId, username: Username, settings: StyleParams) -> Self {
        Self {
            id,
            username,
            started_at_ms: crate::frame::unix_ms(),
            started_at: tokio::time::Instant::now(),
            credit: Mutex::new(None),
            counters: StreamCounters::default(),
            community: Default::default(),
            actor: RwLock::new(None),
            viewers: Mutex::new(Viewers::default()),
            broadcaster: Mutex::new(None),
            taps: Mutex::new(Vec::new()),
            settings: RwLock::new(settings),
            last_output: Mutex::new(None),
            peak_viewers: AtomicU64::new(0),
            presence_changed: AtomicBool::new(false),
            next_input_seq: AtomicU64::new(1),
            end_reason: Mutex::new(None),
        }
    }

    pub(crate) fn set_actor(&self, actor: Option<ActorRef<StreamMsg>>) {
        *self.actor.write().unwrap_or_else(|e| e.into_inner()) = actor;
    }

    pub fn actor(&self) -> Option<ActorRef<StreamMsg>> {
        self.actor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends to the stream's current actor; false if it is not running.
    pub fn cast(&self, msg: StreamMsg) -> bool {
        self.actor().is_some_and(|a| a.cast(msg).is_ok())
    }

    /// Adds a viewer; everyone learns the new count (at the next tick).
    pub fn add_viewer(&self, sink: Box<dyn ViewerSink>) -> ViewerId {
        self.add_viewer_as(Arc::from(sink), None)
    }

    /// Adds the viewer of browser tab `client`: an older connection of the
    /// same tab (a refresh whose old socket has not closed yet) stops counting
    /// and is closed.
    pub fn add_viewer_as(&self, sink: Arc<dyn ViewerSink>, client: Option<&str>) -> ViewerId {
        let counted = sink.counted();
        let (id, count, replaced) = {
            let mut v = self.viewers();
            v.next += 1;
            let id = ViewerId(v.next);
            let replaced = client
                .and_then(|c| v.clients.insert(c.to_string(), id))
                .and_then(|old| {
                    let sink = v.sinks.get(&old).cloned();
                    v.remove(&old).zip(sink)
                });
            v.insert(id, sink, counted);
            (id, v.counted(), replaced)
        };
        if let Some((was_counted, old)) = replaced {
            if was_counted {
                metrics::gauge!("dreamstream_viewers").decrement(1.0);
            }
            old.close("replaced by a newer connection of the same tab");
        }
        if counted {
            self.peak_viewers.fetch_max(count as u64, Ordering::Relaxed);
            metrics::gauge!("dreamstream_viewers").increment(1.0);
        }
        self.presence_changed.store(true, Ordering::Release);
        id
    }

    /// Counts viewer `id` again (true) or not (false; it still gets frames
    /// and events); everyone learns the new count (at the next tick).
    pub fn set_counted(&self, id: ViewerId, counted: bool) {
        let count = {
            let mut v = self.viewers();
            if !v.sinks.contains_key(&id) {
                return;
            }
            let changed = if counted {
                v.uncounted.remove(&id)
            } else {
                v.uncounted.insert(id)
            };
            if !changed {
                return;
            }
            v.counted()
        };
        if counted {
            self.peak_viewers.fetch_max(count as u64, Ordering::Relaxed);
            metrics::gauge!("dreamstream_viewers").increment(1.0);
        } else {
            metrics::gauge!("dreamstream_viewers").decrement(1.0);
        }
        self.presence_changed.store(true, Ordering::Release);
    }

    pub fn remove_viewer(&self, id: ViewerId) {
        let removed = {
            let mut v = self.viewers();
            v.clients.retain(|_, viewer| *viewer != id);
            v.remove(&id)
        };
        if let Some(counted) = removed {
            if counted {
                metrics::gauge!("dreamstream_viewers").decrement(1.0);
            }
            self.presence_changed.store(true, Ordering::Release);
        }
    }

    /// The viewer count, if it changed since the last call: joins and leaves
    /// are announced at most once per tick, so a raid of N viewers (or a
    /// connect-abort loop) costs N sends per tick, not N².
    pub(crate) fn take_presence_change(&self) -> Option<usize> {
        self.presence_changed
            .swap(false, Ordering::AcqRel)
            .then(|| self.viewer_count())
    }

    /// Numbers an input frame: strictly increasing over the stream's whole
    /// life, whatever the broadcaster's connections or the actor's restarts.
    pub(crate) fn number_input(&self) -> u64 {
        self.next_input_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a tap on the output (see `taps`); a tap that answers
    /// `Delivery::Closed` is dropped.
    pub fn add_tap(&self, tap: Arc<dyn ViewerSink>) {
        self.taps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tap);
    }

    /// The viewers counted now (see [`ViewerSink::counted`]).
    pub fn viewer_count(&self) -> usize {
        self.viewers().counted()
    }

    /// Sets the broadcaster's connection (`token` names the session); events
    /// for the streamer go there. A newer connection replaces an older one.
    /// The broadcaster of session `token` (or none); a new one is told the
    /// credit it streams on at once.
    pub fn set_broadcaster(&self, token: u64, sink: Option<Box<dyn ViewerSink>>) {
        if let (Some(sink), Some(credit)) = (&sink, self.credit()) {
            sink.event(&credit.event().to_json());
        }
        *self.broadcaster.lock().unwrap_or_else(|e| e.into_inner()) = sink.map(|s| (token, s));
    }

    pub fn credit(&self) -> Option<CreditState> {
        *self.credit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the owner's credit and tells the broadcaster.
    pub fn set_credit(&self, credit: CreditState) {
        *self.credit.lock().unwrap_or_else(|e| e.into_inner()) = Some(credit);
        self.tell_broadcaster(&credit.event());
    }

    /// Forgets the broadcaster if it is still the session `token`.
    pub fn clear_broadcaster(&self, token: u64) {
        let mut b = self.broadcaster.lock().unwrap_or_else(|e| e.into_inner());
        if b.as_ref().is_some_and(|(t, _)| *t == token) {
            *b = None;
        }
    }

    pub fn broadcaster_connected(&self) -> bool {
        self.broadcaster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub fn settings(&self) -> StyleParams {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the current style needs from a worker (without cloning the style).
    pub fn requirement(&self) -> crate::worker::Requirement {
        crate::worker::Requirement::of(&self.settings.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes the live style; it applies to the next dispatched frame.
    ///
    /// Only a change of *style* — another picture, preset, prompt or
    /// processor, or a style someone requested — enters the history and
    /// reaches viewers as `style_changed`, once. Tweaks of the same style
    /// (strength, colours, steps) change the picture but not the history.
    pub fn set_settings(&self, settings: StyleParams, style_name: String, by: Option<String>) {
        let changed = {
            let mut cur = self.settings.write().unwrap_or_else(|e| e.into_inner());
            let changed = cur.source != settings.source || cur.processor != settings.processor;
            *cur = settings;
            changed
        };
        let newly_credited = by.is_some() && self.community.last_by() != by;
        if !(changed || newly_credited) {
            return;
        }
        self.community.record_change(style_name.clone(), by.clone());
        self.broadcast(&StreamEvent::StyleChanged {
            style: style_name,
            by,
        });
    }

    /// Decides a style request taken from the queue: approved, it becomes the
    /// live style (credited to its requester); one that no longer validates is
    /// rejected. Everyone is told. Returns the decision.
    pub fn decide_request(
        &self,
        request: &super::community::StyleRequest,
        approve: bool,
    ) -> super::community::RequestStatus {
        use super::community::RequestStatus;
        let mut params = self.settings();
        params.source = request.source.clone();
        params.processor = request.processor;
        let status = if approve && params.validate().is_ok() {
            self.set_settings(params, request.label.clone(), Some(request.by.clone()));
            RequestStatus::Approved
        } else {
            RequestStatus::Rejected
        };
        self.broadcast(&StreamEvent::RequestDecided {
            id: request.id,
            status,
            by: request.by.clone(),
            label: request.label.clone(),
        });
        status
    }

    pub fn last_output(&self) -> Option<Arc<OutputFrame>> {
        self.last_output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn end_reason(&self) -> Option<EndReason> {
        *self.end_reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records why the stream ends (the first reason wins).
    pub fn mark_ending(&self, reason: EndReason) {
        let mut r = self.end_reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
    }

    /// Sends a processed frame to every viewer, dropping it for full ones and
    /// forgetting closed ones. The list is taken under the lock and walked
    /// without it.
    pub(crate) fn deliver(&self, frame: Arc<OutputFrame>) {
        let viewers = self.viewers().list();
        let mut closed = Vec::new();
        let mut dropped = 0u64;
        for (id, sink) in viewers.iter() {
            match sink.frame(&frame) {
                Delivery::Sent => {}
                Delivery::Dropped => dropped += 1,
                Delivery::Closed => closed.push(*id),
            }
        }
        drop(viewers);
        if dropped > 0 {
            self.counters
                .viewer_drops
                .fetch_add(dropped, Ordering::Relaxed);
            metrics::counter!("dreamstream_viewer_frames_dropped_total").increment(dropped);
        }
        if !closed.is_empty() {
            let (mut gone, mut counted) = (0, 0);
            {
                let mut v = self.viewers();
                for id in &closed {
                    if let Some(was_counted) = v.remove(id) {
                        v.clients.retain(|_, viewer| viewer != id);
                        gone += 1;
                        counted += usize::from(was_counted);
                    }
                }
            }
            if gone > 0 {
                metrics::gauge!("dreamstream_viewers").decrement(counted as f64);
                self.presence_changed.store(true, Ordering::Release);
            }
        }
        self.taps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|tap| tap.frame(&frame) != Delivery::Closed);
        // The broadcaster sees its own output (the studio's preview).
        if let Some((_, b)) = self
            .broadcaster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            b.frame(&frame);
        }
        *self.last_output.lock().unwrap_or_else(|e| e.into_inner()) = Some(frame);
    }

    fn viewers(&self) -> std::sync::MutexGuard<'_, Viewers> {
        self.viewers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An event for viewers and the broadcaster.
    pub fn broadcast(&self, event: &StreamEvent) {
        let json = event.to_json();
        let viewers = self.viewers().list();
        for (_, sink) in viewers.iter() {
            sink.event(&json);
        }
        self.tell_broadcaster_json(&json);
    }

    /// An event for the broadcaster only.
    pub fn tell_broadcaster(&self, event: &StreamEvent) {
        self.tell_broadcaster_json(&event.to_json());
    }

    fn tell_broadcaster_json(&self, json: &Arc<str>) {
        if let Some((_, b)) = self
            .broadcaster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            b.event(json);
        }
    }

    pub fn totals(&self) -> StreamTotals {
        StreamTotals {
            frames_in: self.counters.frames_in.load(Ordering::Relaxed),
            frames_out: self.counters.frames_out.load(Ordering::Relaxed),
            frames_dropped: self.counters.dropped(),
            peak_viewers: self.peak_viewers.load(Ordering::Relaxed),
        }
    }

    pub fn snapshot(&self) -> StreamSnapshot {
        let c = &self.counters;
        StreamSnapshot {
            stream_id: self.id.0,
            username: self.username.to_string(),
            started_at_ms: self.started_at_ms,
            viewers: self.viewer_count(),
            peak_viewers: self.peak_viewers.load(Ordering::Relaxed),
            broadcaster_connected: self.broadcaster_connected(),
            frames_in: c.frames_in.load(Ordering::Relaxed),
            frames_out: c.frames_out.load(Ordering::Relaxed),
            dropped_replaced: c.dropped_replaced.load(Ordering::Relaxed),
            dropped_late: c.dropped_late.load(Ordering::Relaxed),
            dropped_failed: c.dropped_failed.load(Ordering::Relaxed),
            viewer_drops: c.viewer_drops.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
            last_output_seq: self.last_output().map(|f| f.seq),
            settings: self.settings(),
        }
    }

    /// The stream is over: viewers and the broadcaster learn why, the
    /// viewer set is emptied (the registry moves viewers back to waiting) and
    /// the broadcaster's connection is closed.
    pub(crate) fn close_all(&self, reason: EndReason) {
        self.broadcast(&StreamEvent::Ended {
            reason: reason.as_str().to_string(),
        });
        let n = {
            let mut v = self.viewers();
            let n = v.counted();
            v.sinks.clear();
            v.clients.clear();
            v.uncounted.clear();
            v.list = None;
            n
        };
        metrics::gauge!("dreamstream_viewers").decrement(n as f64);
        let broadcaster = self
            .broadcaster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((_, b)) = broadcaster {
            b.close("the stream ended");
        }
        let taps = std::mem::take(&mut *self.taps.lock().unwrap_or_else(|e| e.into_inner()));
        for tap in taps {
            tap.close("the stream ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::style::{PresetMix, StyleParams};

    /// A sink that counts, or not.
    struct Sink(bool);

    impl ViewerSink for Sink {
        fn frame(&self, _: &Arc<OutputFrame>) -> Delivery {
            Delivery::Sent
        }
        fn event(&self, _: &Arc<str>) -> Delivery {
            Delivery::Sent
        }
        fn counted(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn uncounted_viewers_are_in_the_set_but_not_in_the_count_or_the_peak() {
        let settings = StyleParams::preset(PresetMix::single(0).expect("preset 0"));
        let s = StreamShared::new(StreamId(1), Username::parse("abc").expect("name"), settings);
        let a = s.add_viewer(Box::new(Sink(true)));
        let b = s.add_viewer_as(Arc::new(Sink(false)), Some("tab"));
        assert_eq!(s.viewer_count(), 1);
        assert_eq!(s.totals().peak_viewers, 1);
        s.set_counted(b, true);
        assert_eq!(s.viewer_count(), 2);
        assert_eq!(s.totals().peak_viewers, 2);
        s.set_counted(b, false);
        s.set_counted(b, false);
        assert_eq!(s.viewer_count(), 1);
        // The tab's newer connection replaces the uncounted one.
        let c = s.add_viewer_as(Arc::new(Sink(true)), Some("tab"));
        assert_eq!(s.viewer_count(), 2);
        s.remove_viewer(b);
        assert_eq!(s.viewer_count(), 2, "b was already gone");
        s.remove_viewer(c);
        s.remove_viewer(a);
        s.set_counted(a, true);
        assert_eq!(
            s.viewer_count(),
            0,
            "a viewer that left is not counted again"
        );
        assert_eq!(s.totals().peak_viewers, 2);
    }
}

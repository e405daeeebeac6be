//! StreamSupervisor: starts, finds, stops and restarts the stream actors.
//!
//! Who sends to it: the web tier (start a stream, look one up, stop it, list
//! them) and ractor's supervision events from its children.
//!
//! Restart policy: a stream actor that panics is restarted with the same
//! [`StreamShared`] (viewers, broadcaster, style and counters survive; the
//! frames in flight are lost). More than `max_restarts` failures within
//! `window` and the supervisor gives up: the stream ends with reason `crashed`.
//! Every restart and every give-up is counted in metrics.
//!
//! Who supervises it: the control node's root (`src/control/root.rs`). The
//! live streams are kept in the [`StreamRegistry`], not in this actor: when
//! the supervisor itself panics, ractor takes its stream actors down with it,
//! and the restarted supervisor gives every stream in the registry a new
//! actor (the streams go on; only frames in flight are lost).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster_derive::RactorMessage;
use tokio::time::Instant;

use crate::ids::Username;
use crate::registry::StreamRegistry;
use crate::scheduler::{SchedulerHandle, SchedulerMsg};
use crate::sink::StreamEvent;
use crate::store::{Charge, Credit, EndReason, Stores};
use crate::stream::{CreditState, StreamActor, StreamArgs, StreamConfig, StreamMsg, StreamShared};
use crate::style::StyleParams;

/// When to stop restarting a failing stream actor.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub max_restarts: usize,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// Records a failure at `now`; true if the actor may be restarted.
    pub fn allow(&self, history: &mut VecDeque<Instant>, now: Instant) -> bool {
        while history
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            history.pop_front();
        }
        history.push_back(now);
        history.len() <= self.max_restarts
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    #[error("{0} is already live (one live stream per user)")]
    AlreadyLive(String),
    #[error("no credits left: buy credits to go live (1 credit = {0} minutes)")]
    NoCredits(u64),
    /// Something inside failed (the database, the actors); the cause is in
    /// the log, never in this error, which reaches clients.
    #[error("the stream cannot start right now; try again in a moment")]
    Unavailable,
}

impl StartError {
    /// How a stream row refused at start is closed.
    fn end_reason(&self) -> EndReason {
        match self {
            StartError::NoCredits(_) => EndReason::OutOfCredits,
            _ => EndReason::Crashed,
        }
    }
}

// `Start` carries a whole StyleParams; it is sent once per stream start, so
// boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(RactorMessage)]
pub enum SupervisorMsg {
    Start {
        username: Username,
        settings: StyleParams,
        reply: RpcReplyPort<Result<Arc<StreamShared>, StartError>>,
    },
    Get(Username, RpcReplyPort<Option<Arc<StreamShared>>>),
    List(RpcReplyPort<Vec<Arc<StreamShared>>>),
    Stop(Username, EndReason),
    /// Ends every stream (shutdown); replies with how many were live.
    StopAll(EndReason, RpcReplyPort<usize>),
    /// The scheduler was restarted: every stream announces its waiting frame.
    Reannounce,
    /// Answers at once (readiness: the supervisor is not stuck).
    Ping(RpcReplyPort<()>),
    /// Fault injection for the supervision tests: panics the supervisor.
    Crash,
    /// Fault injection for the readiness tests: the supervisor is busy
    /// (answers nothing) for this long.
    Stall(Duration),
}

pub struct SupervisorArgs {
    pub store: Stores,
    pub scheduler: SchedulerHandle,
    pub config: StreamConfig,
    pub policy: RestartPolicy,
    /// The live streams; outlives this actor (see the module documentation).
    pub registry: Arc<StreamRegistry>,
}

struct Entry {
    shared: Arc<StreamShared>,
    actor: ActorId,
    failures: VecDeque<Instant>,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    streams: HashMap<Username, Entry>,
}

pub struct StreamSupervisor;

impl StreamSupervisor {
    async fn spawn_stream(
        myself: &ActorRef<SupervisorMsg>,
        args: &SupervisorArgs,
        shared: Arc<StreamShared>,
    ) -> Result<ActorRef<StreamMsg>, ActorProcessingErr> {
        let (actor, _) = Actor::spawn_linked(
            None,
            StreamActor,
            StreamArgs {
                shared,
                scheduler: args.scheduler.clone(),
                store: args.store.clone(),
                config: args.config.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        Ok(actor)
    }

    async fn end(st: &mut SupervisorState, username: &Username) {
        let Some(entry) = st.streams.remove(username) else {
            return;
        };
        let shared = entry.shared;
        let reason = shared.end_reason().unwrap_or(EndReason::Stopped);
        // The row first: whoever sees the stream gone from the registry finds
        // it ended in the database.
        if let Err(e) = st
            .args
            .store
            .log
            .stream_ended(shared.id, reason, &shared.totals())
            .await
        {
            tracing::error!(stream_id = %shared.id, error = %e, "failed to record the end of a stream");
        }
        if st.args.registry.end(username, reason).is_none() {
            shared.close_all(reason);
        }
        st.args.scheduler.cast(SchedulerMsg::StreamGone(shared.id));
        metrics::gauge!("dreamstream_live_streams").set(st.streams.len() as f64);
        tracing::info!(stream_id = %shared.id, user = %username, reason = reason.as_str(), "stream ended");
    }

    fn first_payment(
        charge: Result<Charge, crate::store::StoreError>,
        config: &StreamConfig,
    ) -> Result<Credit, StartError> {
        match charge {
            Ok(Charge::Charged(c) | Charge::AlreadyPaid(c)) => Ok(c),
            Ok(Charge::Insufficient { .. }) => {
                Err(StartError::NoCredits(config.meter.period.as_secs() / 60))
            }
            Err(e) => {
                tracing::error!(error = %e, "charging the first period failed");
                Err(StartError::Unavailable)
            }
        }
    }

    fn find(st: &SupervisorState, id: ActorId) -> Option<Username> {
        st.streams
            .iter()
            .find(|(_, e)| e.actor == id)
            .map(|(u, _)| u.clone())
    }
}

impl Actor for StreamSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    /// Gives every stream already in the registry (a restart of this
    /// supervisor) a new actor.
    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut streams = HashMap::new();
        for shared in args.registry.list() {
            let actor = Self::spawn_stream(&myself, &args, shared.clone()).await?;
            shared
                .counters
                .restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(stream_id = %shared.id, "stream actor restarted with its supervisor");
            streams.insert(
                shared.username.clone(),
                Entry {
                    shared,
                    actor: actor.get_id(),
                    failures: VecDeque::new(),
                },
            );
        }
        Ok(SupervisorState { args, streams })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start {
                username,
                settings,
                reply,
            } => {
                if st.streams.contains_key(&username) {
                    let _ = reply.send(Err(StartError::AlreadyLive(username.to_string())));
                    return Ok(());
                }
                // Refused before a stream row exists when there is clearly
                // nothing to stream on: no credit and no paid time running.
                if let Ok(credit) = st.args.store.billing.credit(&username).await
                    && !credit.can_stream()
                {
                    let minutes = st.args.config.meter.period.as_secs() / 60;
                    let _ = reply.send(Err(StartError::NoCredits(minutes)));
                    return Ok(());
                }
                let id = match st.args.store.log.stream_started(&username, &settings).await {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::error!(user = %username, error = %e, "recording a stream start failed");
                        let _ = reply.send(Err(StartError::Unavailable));
                        return Ok(());
                    }
                };
                // The time is paid before anything starts (nothing if a
                // period already paid is running): nothing paid, no stream.
                let period = st.args.config.meter.period;
                let paid = st
                    .args
                    .store
                    .billing
                    .pay_for_now(id, &username, period)
                    .await;
                let charged = matches!(paid, Ok(Charge::Charged(_)));
                let credit = match Self::first_payment(paid, &st.args.config) {
                    Ok(credit) => credit,
                    Err(e) => {
                        let _ = st
                            .args
                            .store
                            .log
                            .stream_ended(id, e.end_reason(), &Default::default())
                            .await;
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let shared = Arc::new(StreamShared::new(id, username.clone(), settings));
                if charged {
                    shared
                        .counters
                        .credits_charged
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                shared.set_credit(CreditState::from_credit(credit, period));
                let actor = match Self::spawn_stream(&myself, &st.args, shared.clone()).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(stream_id = %id, error = %e, "spawning a stream actor failed");
                        let _ = st
                            .args
                            .store
                            .log
                            .stream_ended(id, EndReason::Crashed, &Default::default())
                            .await;
                        let _ = reply.send(Err(StartError::Unavailable));
                        return Ok(());
                    }
                };
                st.streams.insert(
                    username.clone(),
                    Entry {
                        shared: shared.clone(),
                        actor: actor.get_id(),
                        failures: VecDeque::new(),
                    },
                );
                metrics::counter!("dreamstream_streams_started_total").increment(1);
                metrics::gauge!("dreamstream_live_streams").set(st.streams.len() as f64);
                // Viewers waiting for the channel join now (each is greeted).
                st.args.registry.go_live(&shared);
                shared.broadcast(&StreamEvent::Started {
                    username: username.to_string(),
                    stream_id: id.0,
                });
                tracing::info!(stream_id = %id, user = %username, "stream started");
                let _ = reply.send(Ok(shared));
            }
            SupervisorMsg::Get(username, reply) => {
                let _ = reply.send(st.streams.get(&username).map(|e| e.shared.clone()));
            }
            SupervisorMsg::List(reply) => {
                let mut all: Vec<_> = st.streams.values().map(|e| e.shared.clone()).collect();
                all.sort_by_key(|s| s.started_at_ms);
                let _ = reply.send(all);
            }
            SupervisorMsg::Stop(username, reason) => {
                if let Some(e) = st.streams.get(&username) {
                    e.shared.mark_ending(reason);
                    if !e.shared.cast(StreamMsg::Stop(reason)) {
                        Self::end(st, &username).await;
                    }
                }
            }
            SupervisorMsg::Reannounce => {
                for e in st.streams.values() {
                    e.shared.cast(StreamMsg::Reannounce);
                }
            }
            SupervisorMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            SupervisorMsg::Crash => panic!("injected fault: stream supervisor crash"),
            SupervisorMsg::Stall(d) => tokio::time::sleep(d).await,
            SupervisorMsg::StopAll(reason, reply) => {
                let names: Vec<Username> = st.streams.keys().cloned().collect();
                for u in &names {
                    if let Some(e) = st.streams.get(u) {
                        e.shared.mark_ending(reason);
                        if let Some(a) = e.shared.actor() {
                            a.stop(Some(reason.as_str().into()));
                        }
                    }
                    Self::end(st, u).await;
                }
                let _ = reply.send(names.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(username) = Self::find(st, cell.get_id()) else {
                    return Ok(());
                };
                let policy = st.args.policy;
                let entry = st.streams.get_mut(&username).expect("found above");
                let allowed = policy.allow(&mut entry.failures, Instant::now());
                tracing::error!(stream_id = %entry.shared.id, error = %err, allowed, "stream actor failed");
                if allowed {
                    let shared = entry.shared.clone();
                    match Self::spawn_stream(&myself, &st.args, shared.clone()).await {
                        Ok(actor) => {
                            shared
                                .counters
                                .restarts
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            metrics::counter!("dreamstream_stream_restarts_total").increment(1);
                            if let Some(e) = st.streams.get_mut(&username) {
                                e.actor = actor.get_id();
                            }
                            return Ok(());
                        }
                        Err(e) => tracing::error!(error = %e, "restart failed"),
                    }
                }
                metrics::counter!("dreamstream_stream_gave_up_total").increment(1);
                if let Some(e) = st.streams.get(&username) {
                    e.shared.mark_ending(EndReason::Crashed);
                }
                Self::end(st, &username).await;
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(username) = Self::find(st, cell.get_id()) {
                    Self::end(st, &username).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

//! StreamRegistry: each channel's live stream, and the viewers waiting for one.
//!
//! A viewer's connection belongs to a channel (a username), not to one
//! stream: it may come before the streamer goes live, see the stream, get
//! `ended`, and wait for the next one, on one socket. The registry is where
//! those moves happen, under one lock, so a viewer can never fall between
//! "the channel is offline" and "the stream started" (it is either in the
//! stream's viewer set or in the waiting room, never neither).
//!
//! Who uses it: the [`StreamSupervisor`](crate::supervisor) (a stream goes
//! live, a stream ends), the web tier's viewer sessions (watch, leave) and
//! every reader of "what is live" (pages, the API). It outlives the
//! supervisor: a restarted supervisor finds its live streams here and gives
//! each a new actor.
//!
//! Waiting is bounded: at most `per_channel` connections wait for one channel
//! and `per_address` wait from one client address (an IPv6 address counts by
//! its /64), so waiting sockets cannot exhaust the server. A live stream's
//! viewers are not counted here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ids::{Username, ViewerId};
use crate::sink::{Attachment, ViewerSink};
use crate::store::EndReason;
use crate::stream::StreamShared;

/// Bounds on waiting connections.
#[derive(Debug, Clone, Copy)]
pub struct WaitLimits {
    /// Connections waiting for one channel at most.
    pub per_channel: usize,
    /// Connections waiting (for any channel) from one address at most.
    pub per_address: usize,
}

impl Default for WaitLimits {
    fn default() -> Self {
        Self {
            per_channel: 1000,
            per_address: 16,
        }
    }
}

/// Why a connection may not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchRefused {
    #[error("too many viewers are already waiting for this channel; try again later")]
    ChannelFull,
    #[error("too many connections from your address are waiting for streams; try again later")]
    AddressFull,
}

/// One viewer connection's membership of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// The address a waiting limit counts: IPv4 as is, IPv6 by its /64 (one
/// subscriber usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddressKey(u128);

impl AddressKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u32::from(v4) as u128),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u32::from(v4) as u128),
                None => Self((u128::from(v6) & !((1u128 << 64) - 1)) | (1u128 << 127)),
            },
        }
    }
}

struct Member {
    sink: Arc<dyn ViewerSink>,
    client: Option<String>,
    address: Option<AddressKey>,
    /// Its id in the live stream's viewer set; `None` while waiting.
    viewer: Option<ViewerId>,
}

#[derive(Default)]
struct Room {
    live: Option<Arc<StreamShared>>,
    members: HashMap<Ticket, Member>,
}

impl Room {
    fn waiting(&self) -> usize {
        self.members.values().filter(|m| m.viewer.is_none()).count()
    }
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<Username, Room>,
    waiting_by_address: HashMap<AddressKey, usize>,
    next_ticket: u64,
}

impl Inner {
    fn unwait(&mut self, address: Option<AddressKey>) {
        if let Some(a) = address
            && let Some(n) = self.waiting_by_address.get_mut(&a)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.waiting_by_address.remove(&a);
            }
        }
    }

    fn wait(&mut self, address: Option<AddressKey>) {
        if let Some(a) = address {
            *self.waiting_by_address.entry(a).or_default() += 1;
        }
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct StreamRegistry {
    inner: Mutex<Inner>,
    limits: WaitLimits,
}

impl StreamRegistry {
    pub fn new(limits: WaitLimits) -> Self {
        Self {
            inner: Mutex::default(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live stream of `channel`, if any.
    pub fn get(&self, channel: &Username) -> Option<Arc<StreamShared>> {
        self.lock().rooms.get(channel)?.live.clone()
    }

    /// Every live stream, oldest first.
    pub fn list(&self) -> Vec<Arc<StreamShared>> {
        let mut all: Vec<_> = self
            .lock()
            .rooms
            .values()
            .filter_map(|r| r.live.clone())
            .collect();
        all.sort_by_key(|s| s.started_at_ms);
        all
    }

    /// Connections waiting for `channel` (not watching a live stream).
    pub fn waiting(&self, channel: &Username) -> usize {
        self.lock().rooms.get(channel).map_or(0, Room::waiting)
    }

    /// Joins `channel`: the live stream's viewers if it is live, else the
    /// waiting room (bounded). The sink hears where it is through
    /// [`ViewerSink::attach`] before this returns.
    pub fn watch(
        &self,
        channel: &Username,
        sink: Arc<dyn ViewerSink>,
        client: Option<String>,
        ip: Option<IpAddr>,
    ) -> Result<Ticket, WatchRefused> {
        let address = ip.map(AddressKey::of);
        let mut inner = self.lock();
        let live = inner.rooms.get(channel).and_then(|r| r.live.clone());
        let viewer = match &live {
            Some(stream) => {
                sink.attach(Attachment::Live(stream));
                Some(stream.add_viewer_as(sink.clone(), client.as_deref()))
            }
            None => {
                let waiting_here = inner.rooms.get(channel).map_or(0, Room::waiting);
                if waiting_here >= self.limits.per_channel {
                    return Err(WatchRefused::ChannelFull);
                }
                if address.is_some_and(|a| {
                    inner.waiting_by_address.get(&a).copied().unwrap_or(0)
                        >= self.limits.per_address
                }) {
                    return Err(WatchRefused::AddressFull);
                }
                inner.wait(address);
                sink.attach(Attachment::Waiting);
                None
            }
        };
        inner.next_ticket += 1;
        let ticket = Ticket(inner.next_ticket);
        inner
            .rooms
            .entry(channel.clone())
            .or_default()
            .members
            .insert(
                ticket,
                Member {
                    sink,
                    client,
                    address,
                    viewer,
                },
            );
        Ok(ticket)
    }

    /// The connection of `ticket` is gone.
    pub fn leave(&self, channel: &Username, ticket: Ticket) {
        let mut inner = self.lock();
        let Some(room) = inner.rooms.get_mut(channel) else {
            return;
        };
        let Some(member) = room.members.remove(&ticket) else {
            return;
        };
        let live = room.live.clone();
        if room.live.is_none() && room.members.is_empty() {
            inner.rooms.remove(channel);
        }
        match (member.viewer, live) {
            (Some(id), Some(stream)) => stream.remove_viewer(id),
            (None, _) => inner.unwait(member.address),
            (Some(_), None) => {}
        }
    }

    /// The stream counts `ticket`'s connection again, or not, as its sink's
    /// [`ViewerSink::counted`] now says (nothing while it waits: it is
    /// counted, or not, when the stream starts).
    pub fn recount(&self, channel: &Username, ticket: Ticket) {
        let inner = self.lock();
        let Some(room) = inner.rooms.get(channel) else {
            return;
        };
        if let (Some(member), Some(stream)) = (room.members.get(&ticket), &room.live)
            && let Some(id) = member.viewer
        {
            stream.set_counted(id, member.sink.counted());
        }
    }

    /// `stream` went live: the waiting connections join it. False if the
    /// channel already has a live stream (nothing changes then).
    pub(crate) fn go_live(&self, stream: &Arc<StreamShared>) -> bool {
        let mut inner = self.lock();
        let room = inner.rooms.entry(stream.username.clone()).or_default();
        if room.live.is_some() {
            return false;
        }
        room.live = Some(stream.clone());
        let mut joined = Vec::new();
        for member in room.members.values_mut() {
            member.sink.attach(Attachment::Live(stream));
            member.viewer =
                Some(stream.add_viewer_as(member.sink.clone(), member.client.as_deref()));
            joined.push(member.address);
        }
        for address in joined {
            inner.unwait(address);
        }
        true
    }

    /// The live stream of `channel` ends: everyone is told (`ended`), the
    /// broadcaster's connection is closed and the viewers wait again.
    /// Returns the stream that ended.
    pub(crate) fn end(&self, channel: &Username, reason: EndReason) -> Option<Arc<StreamShared>> {
        let mut inner = self.lock();
        let room = inner.rooms.get_mut(channel)?;
        let stream = room.live.take()?;
        stream.close_all(reason);
        let mut waiting = Vec::new();
        for member in room.members.values_mut() {
            if member.viewer.take().is_some() {
                member.sink.attach(Attachment::Ended(&stream));
                waiting.push(member.address);
            }
        }
        if room.members.is_empty() {
            inner.rooms.remove(channel);
        }
        for address in waiting {
            inner.wait(address);
        }
        Some(stream)
    }

    /// Live streams and waiting connections (for the dashboard and tests).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        let live = inner.rooms.values().filter(|r| r.live.is_some()).count();
        let waiting = inner.rooms.values().map(Room::waiting).sum();
        (live, waiting)
    }
}

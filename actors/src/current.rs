//! [`Current`]: the actor that plays a role now, for everyone who talks to it.
//!
//! A supervisor that restarts a child gets a new `ActorRef`; whoever kept the
//! old one would talk to a dead actor forever. Holders of a restartable
//! actor (streams and job tasks → the scheduler, the web tier → the stream
//! supervisor) keep a `Current` instead, and the supervisor swaps the new
//! actor in as it restarts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ractor::{ActorRef, Message};

pub struct Current<M: Message>(Arc<Inner<M>>);

struct Inner<M: Message> {
    actor: RwLock<ActorRef<M>>,
    /// How many times the actor was replaced.
    generation: AtomicU64,
}

impl<M: Message> Clone for Current<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: Message> Current<M> {
    pub fn new(actor: ActorRef<M>) -> Self {
        Self(Arc::new(Inner {
            actor: RwLock::new(actor),
            generation: AtomicU64::new(0),
        }))
    }

    /// The actor now.
    pub fn get(&self) -> ActorRef<M> {
        self.0
            .actor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Which actor this is (counts replacements): a holder that told the
    /// actor something can tell whether the actor it told is still the one.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Puts a restarted actor in place.
    pub fn replace(&self, actor: ActorRef<M>) {
        *self.0.actor.write().unwrap_or_else(|e| e.into_inner()) = actor;
        self.0.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Sends to the actor now; false if it is down (being restarted). A
    /// message lost that way is repaired by the restart (see its owner).
    pub fn cast(&self, msg: M) -> bool {
        match self.get().cast(msg) {
            Ok(()) => true,
            Err(_) => {
                tracing::debug!("actor down (restarting): message lost");
                false
            }
        }
    }
}

//! A WebSocket session as a stream's [`ViewerSink`]: frames are offered to the
//! session's bounded mailbox (a full mailbox drops the frame for this viewer
//! only); events always go through (they are rare).

use std::sync::Arc;

use actix::prelude::*;
use dreamstream_actors::frame::OutputFrame;
use dreamstream_actors::sink::{Delivery, ViewerSink};

#[derive(Message)]
#[rtype(result = "()")]
pub enum Deliver {
    Frame(Arc<OutputFrame>),
    Event(Arc<str>),
}

pub struct SessionSink {
    recipient: Recipient<Deliver>,
}

impl SessionSink {
    pub fn new(recipient: Recipient<Deliver>) -> Self {
        Self { recipient }
    }
}

impl ViewerSink for SessionSink {
    fn frame(&self, frame: &Arc<OutputFrame>) -> Delivery {
        match self.recipient.try_send(Deliver::Frame(frame.clone())) {
            Ok(()) => Delivery::Sent,
            Err(SendError::Full(_)) => Delivery::Dropped,
            Err(SendError::Closed(_)) => Delivery::Closed,
        }
    }

    fn event(&self, json: &Arc<str>) -> Delivery {
        if !self.recipient.connected() {
            return Delivery::Closed;
        }
        self.recipient.do_send(Deliver::Event(json.clone()));
        Delivery::Sent
    }
}

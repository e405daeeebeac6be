//! Actor tests with paused tokio time: the scheduling rules and supervision,
//! with fake workers that take a fixed time per frame.

mod community;
mod credits;
mod harness;
mod reconnects;
mod scheduling;
mod supervision;

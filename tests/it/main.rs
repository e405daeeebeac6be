//! Control-node integration tests on a real server (port 0, temporary SQLite,
//! the in-process CPU worker), with real WebSocket clients.

mod cluster;
mod helpers;
mod live_path;
mod pages;

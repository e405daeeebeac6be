//! Control-node integration tests on a real server (port 0, temporary SQLite,
//! the in-process CPU worker), with real WebSocket clients.

mod accounts;
mod admin;
mod browser;
mod cluster;
mod community;
mod deploy;
mod helpers;
mod live_path;
mod oauth;
mod pages;
mod stripe;
mod studio_e2e;

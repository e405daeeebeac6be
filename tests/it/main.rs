//! Control-node integration tests on a real server (port 0, temporary SQLite,
//! the in-process CPU worker), with real WebSocket clients.

#[macro_use]
mod helpers;

mod accounts;
mod admin;
mod browser;
mod cluster;
mod community;
mod deploy;
mod diffusion_live;
mod first_minutes;
mod live_path;
mod metering;
mod oauth;
mod pages;
mod push_pull;
mod raw_ws;
mod resilience;
mod security;
mod sockets;
mod stripe;
mod studio_e2e;
mod tidy;
mod v1_api;
mod webrtc;

//! DreamStream control node: web tier (actix-web, askama, WebSocket sessions),
//! the control plane (ractor actors on their own runtime), the database, the CLI.

pub mod accounts;
pub mod app;
pub mod audience;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod community;
pub mod control;
pub mod db;
pub mod limits;
pub mod media;
pub mod payments;
pub mod secrets;
pub mod settings;
pub mod stats;
pub mod telemetry;
pub mod web;

//! The coordinator: decides who may publish, assigns encoders, talks to the customer's web app.
//! Stateless: every decision reads and writes a [`state::StateStore`], so any number of copies
//! can run (as an AWS Lambda function or a plain server) and any can die at any time.
//!
//! # Layout
//! - [`config`]: settings, with the original system's environment variable names.
//! - [`auth`]: `Authorization` headers of the web-app contract (Basic, Bearer, Custom).
//! - [`webapp`]: key verification and event callbacks to the web app (SPEC §2).
//! - [`state`]: the state interface and its in-memory backend.
//! - [`bus`]: signalling to ingest and encoder nodes, and its in-process backend.
//! - [`coordinator`]: publish decisions, stream lifecycle, event delivery; implements
//!   [`contract::control::ControlPlane`].
//! - [`commands`]: the web app's commands API (`/commands/capacity`, `close`, `report`).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod auth;
pub mod bus;
pub mod commands;
pub mod config;
pub mod coordinator;
pub mod redis_state;
pub mod state;
pub mod webapp;

pub use coordinator::Coordinator;

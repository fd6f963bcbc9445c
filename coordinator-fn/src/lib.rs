//! The coordinator: decides who may publish, assigns encoders, talks to the customer's web app.
//! Stateless: every decision reads and writes a [`state::StateStore`], so any number of copies
//! can run (as an AWS Lambda function or a plain server) and any can die at any time.
//!
//! # Layout
//! - [`config`]: settings, with the original system's environment variable names.
//! - [`auth`]: `Authorization` headers of the web-app contract (Basic, Bearer, Custom).
//! - [`webapp`]: key verification and event callbacks to the web app (SPEC §2).
//! - [`state`]: the state interface and its in-memory backend; [`redis_state`]: on Redis.
//! - [`bus`]: signalling to ingest and encoder nodes, and its in-process backend;
//!   [`redis_bus`]: over Redis pub/sub, with stored jobs.
//! - [`coordinator`]: publish decisions, stream lifecycle, event delivery; implements
//!   [`contract::control::ControlPlane`].
//! - [`commands`]: the web app's commands API (`/commands/capacity`, `close`, `report`).
//! - [`internal`]: the JWT-authenticated API of ingest and encoder nodes (`/internal/*`);
//!   [`client`]: the nodes' side of it.
//! - [`service`]: the `coordinator-fn` binary's settings, full router and server loop.
//! - [`secrets`]: secret settings read from AWS Secrets Manager (`SECRETS_ARN`).
//! - [`lambda`]: serving the same router on AWS Lambda, and the scheduled maintenance call.
//! - [`telemetry`]: log setup, signal handling and node IDs shared by the binaries.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod auth;
pub mod bus;
pub mod client;
pub mod commands;
pub mod config;
pub mod coordinator;
pub mod internal;
pub mod lambda;
pub mod redis_bus;
pub mod redis_state;
pub mod secrets;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod webapp;

pub use coordinator::Coordinator;

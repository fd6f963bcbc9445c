//! The contract between the components of the system: everything that crosses a process
//! boundary is defined here once.
//!
//! # Layout
//! - [`ids`]: channel / key validation and stream ID generation (SPEC §1 "Identifiers").
//! - [`resolution`]: the `x-resolutions` grammar and the fitting of renditions to a source.
//! - [`previews`]: the `x-previews` grammar.
//! - [`keys`]: storage object keys, content types and cache headers (SPEC §3).
//! - [`playlist`]: rendering of live, VOD and master playlists.
//! - [`settings`]: value grammars shared by every binary's configuration (booleans).
//! - [`token`]: HS256 JWTs that authenticate internal calls between components.
//! - [`control`]: messages between ingest, encoder and coordinator, and the traits each side
//!   implements (in process in the embedded mode, over HTTP and Redis when distributed).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod control;
pub mod ids;
pub mod keys;
pub mod playlist;
pub mod previews;
pub mod resolution;
pub mod settings;
pub mod token;

pub use ids::{validate_id, IdError, StreamId, DEFAULT_ID_MAX_LENGTH};
pub use previews::PreviewSpec;
pub use resolution::{Rendition, ResolutionRequest, SourceVideo};

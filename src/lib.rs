//! settlegate: a settlement-file gateway that keeps, identifies and judges every
//! file a partner sends, and feeds each one into settlement at most once.
//!
//! The modules mirror the pipeline:
//!
//! ```text
//! channels (watch, sftp pull, sftp push, manual) ─► intake:
//!     stage ─► identify ─► format (verify) ─► judge ─► ledger (feed)
//! ```
//!
//! - [`model`]: the shared vocabulary (channels, file states, verdicts,
//!   drill sources, exit codes), each mapped to its text in one place.
//! - [`channels`]: thin adapters that find complete files and hand them to
//!   [`intake`], the one path every arrival takes.
//! - [`stage`]: the content-addressed store; bytes are kept before anything else.
//! - [`identify`]: which format a file is, which control file goes with it.
//! - [`format`]: declarative format specs and the streaming verifier (pure).
//! - [`judge`]: the verdict, a pure function of facts and ledger answers.
//! - [`ledger`]: every SQL statement; the database's constraints keep the promise.
//! - [`cluster`]: several nodes on one ledger (heartbeats, leases).
//! - [`serve`], [`cli`], [`config`]: the process around them.

pub mod auth;
pub mod channels;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod day;
pub mod format;
pub mod http;
pub mod identify;
pub mod intake;
pub mod judge;
pub mod ledger;
pub mod model;
pub mod outbound;
pub mod serve;
pub mod stage;
pub mod telemetry;

//! settlegate: a settlement-file gateway that keeps, identifies and judges every
//! file a partner sends, and feeds each one into settlement at most once.
//!
//! The crate mirrors the pipeline: channels hand bytes to one intake path,
//! which stages them, identifies and verifies them with the [`format`] engine,
//! asks the judge for a verdict and feeds the ledger.

pub mod cli;
pub mod config;
pub mod format;
pub mod intake;
pub mod judge;
pub mod ledger;
pub mod stage;

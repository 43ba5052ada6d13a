//! Arrival channels: thin adapters that find complete files and hand them to
//! the one intake path ([`crate::intake::Gateway`]).

pub mod receipt;
pub mod sftp_server;
pub mod watch;

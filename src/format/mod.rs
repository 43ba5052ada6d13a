//! The format engine: declarative specs, strict field codec, and the
//! streaming verifier. Pure: no file system (beyond loading specs), network,
//! database or clock.

pub mod codec;
pub mod generate;
pub mod rules;
pub mod spec;
pub mod verify;

pub use codec::Encoding;
pub use spec::{FormatRegistry, FormatSpec, SpecError};
pub use verify::{
    DataRecord, FileContext, FileFacts, Parallelism, RecordSink, VerifyError, verify, verify_whole,
    verify_with,
};

//! Any bytes, through every shipped format: the verifier must answer with
//! facts (valid, or an error naming where) and never panic, and plain
//! verification (compiled record plans, chunks over threads) must find what
//! decoding every record for a consumer finds.
#![no_main]

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use settlegate::format::{DataRecord, FileContext, FormatRegistry, Parallelism, verify_with};

fn registry() -> &'static FormatRegistry {
    static REGISTRY: OnceLock<FormatRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../formats");
        FormatRegistry::load_dir(&dir).expect("shipped formats load")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte says how many of the next bytes are the sidecar; the
    // rest is the data file (so a fixture behind a 0 byte is a seed).
    let Some((head, rest)) = data.split_first() else {
        return;
    };
    let (sidecar, body) = rest.split_at(usize::from(*head).min(rest.len()));
    for spec in registry().iter() {
        // A name each format's file-name pattern accepts, so the content is read.
        let name = match spec.id.as_str() {
            "card-settlement" => "CSTL_031_20261121_0001.dat",
            "bank-transfer-result" => "TRR_004_20261121_01.dat",
            _ => "PGSTL_PG01_20261121_01.csv",
        };
        let ctx = FileContext {
            name,
            sidecar: Some(sidecar),
        };
        let par = Parallelism {
            workers: 3,
            chunk_bytes: 1 + body.len() % 997,
        };
        let facts = verify_with(spec, body, ctx, &mut (), par).expect("reading a slice cannot fail");
        assert_eq!(facts.size, body.len() as u64);
        assert_eq!(facts.is_valid(), facts.fingerprint.is_some());
        let mut every = |_: &DataRecord<'_>| ControlFlow::Continue(());
        let decoded = verify_with(spec, body, ctx, &mut every, Parallelism::SEQUENTIAL)
            .expect("reading a slice cannot fail");
        assert_eq!(facts, decoded);
    }
});

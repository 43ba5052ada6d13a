//! Any bytes, through every shipped format: the verifier must answer with
//! facts (valid, or an error naming where) and never panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use settlegate::format::{FileContext, FormatRegistry, verify};

fn registry() -> &'static FormatRegistry {
    static REGISTRY: OnceLock<FormatRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../formats");
        FormatRegistry::load_dir(&dir).expect("shipped formats load")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into data file and sidecar.
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (sidecar, body) = data.split_at(split);
    for spec in registry().iter() {
        let ctx = FileContext {
            name: "PGSTL_PG01_20261121_01.csv",
            sidecar: Some(sidecar),
        };
        let facts = verify(spec, body, ctx, &mut ()).expect("reading a slice cannot fail");
        assert_eq!(facts.size, body.len() as u64);
        assert_eq!(facts.is_valid(), facts.fingerprint.is_some());
    }
});

//! The fixture harness: every case under `fixtures/<format>/<case>/` is
//! verified and must produce the outcome written in its `expect.toml`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use settlegate::format::{
    DataRecord, FileContext, FileFacts, FormatRegistry, FormatSpec, Parallelism, verify,
    verify_whole, verify_with,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    valid: bool,
    records: Option<u64>,
    #[serde(default)]
    business_key: BTreeMap<String, String>,
    #[serde(default)]
    totals: BTreeMap<String, String>,
    drill_signals: Option<Vec<String>>,
    error: Option<ExpectError>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectError {
    record: Option<u64>,
    field: Option<String>,
    message: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The data file of a case: the one file that is neither the expectation nor a sidecar.
fn data_file(dir: &Path, spec: &FormatSpec) -> PathBuf {
    let suffix = spec.sidecar.as_ref().map(|s| s.suffix.clone());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "expect.toml")
        .filter(|p| {
            suffix
                .as_ref()
                .is_none_or(|s| !p.to_string_lossy().ends_with(s.as_str()))
        })
        .collect();
    assert_eq!(
        files.len(),
        1,
        "{}: expected one data file, found {files:?}",
        dir.display()
    );
    files.pop().unwrap()
}

/// A case's data file, its name, and its sidecar control file's bytes if any.
fn case_files(dir: &Path, spec: &FormatSpec) -> (PathBuf, String, Option<Vec<u8>>) {
    let file = data_file(dir, spec);
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    let sidecar = spec
        .sidecar_name(&name)
        .and_then(|s| std::fs::read(dir.join(s)).ok());
    (file, name, sidecar)
}

/// One case by format and name: its spec, data file, file name and sidecar bytes.
fn fixture<'r>(
    registry: &'r FormatRegistry,
    format: &str,
    case: &str,
) -> (&'r FormatSpec, PathBuf, String, Option<Vec<u8>>) {
    let spec = registry.get(format).unwrap();
    let (file, name, sidecar) = case_files(&root().join("fixtures").join(format).join(case), spec);
    (spec, file, name, sidecar)
}

fn check_case(spec: &FormatSpec, dir: &Path) -> Result<(), String> {
    let expect: Expect = toml::from_str(&std::fs::read_to_string(dir.join("expect.toml")).unwrap())
        .map_err(|e| format!("bad expect.toml: {e}"))?;
    let (file, name, sidecar) = case_files(dir, spec);
    let ctx = FileContext {
        name: &name,
        sidecar: sidecar.as_deref(),
    };
    let bytes = std::fs::File::open(&file).unwrap();
    let facts = verify(spec, bytes, ctx, &mut ()).unwrap();
    let mut problems = Vec::new();
    let raw = std::fs::read(&file).unwrap();
    let whole = verify_whole(spec, &raw, ctx, &mut ()).unwrap();
    if whole != facts {
        problems.push(format!("whole in memory: {whole:?}\ndefault: {facts:?}"));
    }
    // Checked in order or in chunks over several threads, a file gives the
    // same facts, error for error.
    let in_order = verify_with(spec, &raw[..], ctx, &mut (), Parallelism::SEQUENTIAL).unwrap();
    if in_order != facts {
        problems.push(format!("in order: {in_order:?}\ndefault: {facts:?}"));
    }
    // With a record consumer every record is decoded field by field (the
    // feed pass); plain verification takes data records by compiled plans.
    // Both must find the same.
    let mut every = |_: &DataRecord<'_>| ControlFlow::Continue(());
    let decoded = verify_with(spec, &raw[..], ctx, &mut every, Parallelism::SEQUENTIAL).unwrap();
    if decoded != in_order {
        problems.push(format!(
            "record by record: {decoded:?}\nin order: {in_order:?}"
        ));
    }
    for chunk_bytes in [1, 150, 203, 405, 1000] {
        let par = Parallelism {
            workers: 3,
            chunk_bytes,
        };
        let chunked = verify_with(spec, &raw[..], ctx, &mut (), par).unwrap();
        if chunked != in_order {
            problems.push(format!(
                "in chunks of {chunk_bytes}: {chunked:?}\nin order: {in_order:?}"
            ));
        }
    }
    if facts.is_valid() != expect.valid {
        problems.push(format!(
            "valid = {}, expected {} ({:?})",
            facts.is_valid(),
            expect.valid,
            facts.error
        ));
    }
    let size = std::fs::metadata(&file).unwrap().len();
    if facts.size != size {
        problems.push(format!("size {} != {}", facts.size, size));
    }
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()))
    };
    if facts.checksum_hex() != sha {
        problems.push("checksum differs from SHA-256 of the file".into());
    }
    if expect.valid {
        if facts.fingerprint.is_none() {
            problems.push("valid file without a fingerprint".into());
        }
        if let Some(n) = expect.records
            && facts.records != n
        {
            problems.push(format!("records = {}, expected {n}", facts.records));
        }
        let key: BTreeMap<String, String> = facts.business_key.iter().cloned().collect();
        if !expect.business_key.is_empty() && key != expect.business_key {
            problems.push(format!(
                "business key {key:?}, expected {:?}",
                expect.business_key
            ));
        }
        for (name, value) in &expect.totals {
            let want = Decimal::from_str(value).unwrap();
            match facts.totals.iter().find(|(n, _)| n == name) {
                Some((_, got)) if *got == want => {}
                other => problems.push(format!("total {name} = {other:?}, expected {want}")),
            }
        }
        let signals = expect.drill_signals.clone().unwrap_or_default();
        if facts.drill_signals != signals {
            problems.push(format!(
                "drill signals {:?}, expected {signals:?}",
                facts.drill_signals
            ));
        }
    } else if let (Some(want), Some(got)) = (&expect.error, &facts.error) {
        if got.record != want.record {
            problems.push(format!(
                "error record {:?}, expected {:?}: {got}",
                got.record, want.record
            ));
        }
        if got.field != want.field {
            problems.push(format!(
                "error field {:?}, expected {:?}: {got}",
                got.field, want.field
            ));
        }
        if !got.message.contains(&want.message) {
            problems.push(format!(
                "error message {:?} lacks {:?}",
                got.message, want.message
            ));
        }
        if facts.fingerprint.is_some() {
            problems.push("an invalid file has a fingerprint".into());
        }
    } else if expect.error.is_none() {
        problems.push("invalid case without [error] in expect.toml".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn every_fixture_behaves_as_written_beside_it() {
    let registry = FormatRegistry::load_dir(&root().join("formats")).expect("formats load");
    let mut cases = 0;
    let mut failures = Vec::new();
    for spec in registry.iter() {
        let dir = root().join("fixtures").join(&spec.id);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        assert!(entries.len() >= 4, "{}: too few fixtures", spec.id);
        for case in entries {
            cases += 1;
            if let Err(e) = check_case(spec, &case) {
                failures.push(format!(
                    "{}/{}: {e}",
                    spec.id,
                    case.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} fixtures failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases >= 40, "only {cases} fixtures ran");
}

/// The fingerprint's definition is part of the ledger: a file fed last year
/// must still be recognised when re-sent after an upgrade. These values pin
/// it (v1); a change here is a change of definition, not a refactoring.
#[test]
fn fingerprints_are_pinned() {
    let registry = FormatRegistry::load_dir(&root().join("formats")).expect("formats load");
    for (format, case, want) in [
        (
            "card-settlement",
            "valid-hangul",
            "1c24dd2f2288d10660946ed6259a68b52b94c7bb2cf4ceaba432ac0b8d566c0c",
        ),
        (
            "bank-transfer-result",
            "valid-basic",
            "007503e62565a67fef3acefaa253ad36864fc11cf1c48aaa8a2f27830f2b127b",
        ),
        (
            "pg-settlement-csv",
            "valid-basic",
            "56aa3d7229a7e5fc0f00af44d0192b4b5a0fc6305d5b4d613ec7533466205653",
        ),
    ] {
        let (spec, file, name, sidecar) = fixture(&registry, format, case);
        let ctx = FileContext {
            name: &name,
            sidecar: sidecar.as_deref(),
        };
        let facts = verify(spec, std::fs::File::open(&file).unwrap(), ctx, &mut ()).unwrap();
        assert_eq!(
            facts.fingerprint_hex().as_deref(),
            Some(want),
            "{format}/{case}"
        );
    }
}

/// Every way of verifying a file — the default (chunks on the free
/// workers), whole in memory, in order, record by record (the feed pass)
/// and in small chunks on three workers — and the fingerprint each gives.
fn fingerprints_every_way(spec: &FormatSpec, raw: &[u8], ctx: FileContext<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let fp = |f: FileFacts| {
        f.fingerprint_hex()
            .unwrap_or_else(|| format!("{:?}", f.error))
    };
    out.push(fp(verify(spec, raw, ctx, &mut ()).unwrap()));
    out.push(fp(verify_whole(spec, raw, ctx, &mut ()).unwrap()));
    out.push(fp(verify_with(
        spec,
        raw,
        ctx,
        &mut (),
        Parallelism::SEQUENTIAL,
    )
    .unwrap()));
    let mut every = |_: &DataRecord<'_>| ControlFlow::Continue(());
    out.push(fp(verify_with(
        spec,
        raw,
        ctx,
        &mut every,
        Parallelism::SEQUENTIAL,
    )
    .unwrap()));
    for chunk_bytes in [203, 4096] {
        let par = Parallelism {
            workers: 3,
            chunk_bytes,
        };
        out.push(fp(verify_with(spec, raw, ctx, &mut (), par).unwrap()));
    }
    out
}

/// Today's fingerprint of every valid fixture, through every way of
/// verifying: faster decoding or feeding must leave each one as it is (a
/// file fed before an upgrade is still recognised after it).
#[test]
fn every_valid_fixtures_fingerprint_is_pinned() {
    const PINNED: &[(&str, &str, &str)] = &[
        // (format, case, fingerprint)
        (
            "bank-transfer-request",
            "valid-basic",
            "37b96abf8b5086d94b42214fa1c01a97e0fc3e4a47bb9e35bb8eff3a30da740d",
        ),
        (
            "bank-transfer-result",
            "valid-basic",
            "007503e62565a67fef3acefaa253ad36864fc11cf1c48aaa8a2f27830f2b127b",
        ),
        (
            "bank-transfer-result",
            "valid-cp949-only",
            "783d1e9c1dd5513ac7d1c4649e7ff7a3b80edebab0571718cbaabe16ff8c3ee0",
        ),
        (
            "bank-transfer-result",
            "valid-drill-name",
            "007503e62565a67fef3acefaa253ad36864fc11cf1c48aaa8a2f27830f2b127b",
        ),
        (
            "bank-transfer-result",
            "valid-empty-day",
            "0ef1a8c1ffca6c7cf3c0a4d6065a50a58c4bf575d640a3add07e23b68c85d59f",
        ),
        (
            "card-settlement",
            "valid-basic",
            "6322b127ce83cf886e13c42fbe2a12b79d94fc41406271479d4402403dd63ea6",
        ),
        (
            "card-settlement",
            "valid-cancels",
            "c72e60a15c7d7f385df8616c3054c907f67d6361b4342e343f576962f46c6c02",
        ),
        (
            "card-settlement",
            "valid-drill-run-mode",
            "6322b127ce83cf886e13c42fbe2a12b79d94fc41406271479d4402403dd63ea6",
        ),
        (
            "card-settlement",
            "valid-empty-day",
            "7498d8df61f14a52d9839532f21cbfeee49b7f659add8499ee5a97bb73957724",
        ),
        (
            "card-settlement",
            "valid-full-field",
            "5de829475d36c6bc34a320b4403544004a307728de11c39b167df850d1426b07",
        ),
        (
            "card-settlement",
            "valid-hangul",
            "1c24dd2f2288d10660946ed6259a68b52b94c7bb2cf4ceaba432ac0b8d566c0c",
        ),
        (
            "card-settlement",
            "valid-ideographic-space",
            "8867a77acfd91777876c92101181590350723489901a2059d27c05e62a8a332f",
        ),
        (
            "card-settlement",
            "valid-lf",
            "6322b127ce83cf886e13c42fbe2a12b79d94fc41406271479d4402403dd63ea6",
        ),
        (
            "card-settlement",
            "valid-max-amounts",
            "d2c09f3ad337abc46ed09a3627dc6f81241f90f2eefc2529edeebfc7def38734",
        ),
        (
            "pg-settlement-csv",
            "valid-basic",
            "56aa3d7229a7e5fc0f00af44d0192b4b5a0fc6305d5b4d613ec7533466205653",
        ),
        (
            "pg-settlement-csv",
            "valid-bom-crlf",
            "56aa3d7229a7e5fc0f00af44d0192b4b5a0fc6305d5b4d613ec7533466205653",
        ),
        (
            "pg-settlement-csv",
            "valid-empty-day",
            "3ece816c047bfbc3893b9b9c727aaef46f8bebd4fbd29e51c21ba6c190cbde58",
        ),
        (
            "pg-settlement-csv",
            "valid-multiline-crlf",
            "cd81ed006e9adf77bcd7c658da5fa302489f761bb782bf4d3659e2e901a3c9c0",
        ),
        (
            "pg-settlement-csv",
            "valid-multiline-lf",
            "cd81ed006e9adf77bcd7c658da5fa302489f761bb782bf4d3659e2e901a3c9c0",
        ),
        (
            "pg-settlement-csv",
            "valid-multiline-quotes",
            "7710875e99986a2edc93d7fa2de9cbfca091431f169f02f91b81fdd2affcc8d8",
        ),
        (
            "pg-settlement-csv",
            "valid-quoted",
            "bc0d17dbddb7b1e5e2681bceb8f2278d9bde7180130502675b94cff4ff226894",
        ),
        (
            "pg-settlement-csv",
            "valid-refund-usd",
            "148a1ba10a7b843761522d293f528a76fe1d004b870b48e131c9448f0a819929",
        ),
    ];
    let registry = FormatRegistry::load_dir(&root().join("formats")).expect("formats load");
    let mut found = Vec::new();
    for spec in registry.iter() {
        let dir = root().join("fixtures").join(&spec.id);
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        cases.sort();
        for case in cases {
            let (file, name, sidecar) = case_files(&case, spec);
            let ctx = FileContext {
                name: &name,
                sidecar: sidecar.as_deref(),
            };
            let raw = std::fs::read(&file).unwrap();
            let Some(fp) = verify(spec, &raw[..], ctx, &mut ())
                .unwrap()
                .fingerprint_hex()
            else {
                continue;
            };
            let case = case.file_name().unwrap().to_string_lossy().into_owned();
            for (way, got) in fingerprints_every_way(spec, &raw, ctx)
                .into_iter()
                .enumerate()
            {
                assert_eq!(got, fp, "{}/{case}: way {way}", spec.id);
            }
            found.push((spec.id.clone(), case, fp));
        }
    }
    let pinned: Vec<(String, String, String)> = PINNED
        .iter()
        .map(|(f, c, p)| (f.to_string(), c.to_string(), p.to_string()))
        .collect();
    assert_eq!(found, pinned, "\nfound:\n{found:#?}");
}

/// A card file shaped like Korean settlement data: nearly every merchant
/// name in Hangul (CP949-only syllables and ideographic spaces among them),
/// names of every length up to the field's 40 bytes, a tenth cancels.
fn hangul_card_file(records: u64) -> Vec<u8> {
    use settlegate::format::generate::{CardFile, CardRecord};
    const FIRST: [&str; 8] = [
        "행복한",
        "똠양꿍",
        "햏",
        "우리동네",
        "참좋은",
        "서울",
        "대박",
        "한국",
    ];
    const KIND: [&str; 7] = [
        "빵집",
        "편의점",
        "커피전문점",
        "주유소",
        "약국",
        "분식",
        "정육점 마트",
    ];
    const BRANCH: [&str; 5] = ["", " 강남점", " 부산 해운대점", "\u{3000}본점", " 2호점"];
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
    let mut f = CardFile::new(day);
    f.records = (0..records)
        .map(|i| {
            let mut r = CardRecord::synthetic(i, day);
            let n = i.wrapping_mul(2654435761) >> 7;
            r.merchant_name = if i % 20 == 7 {
                format!("SHOP {n}")
            } else {
                format!(
                    "{}{}{}",
                    FIRST[(n % 8) as usize],
                    KIND[(n / 8 % 7) as usize],
                    BRANCH[(n / 56 % 5) as usize]
                )
            };
            r.cancel = i % 10 == 3;
            r
        })
        .collect();
    f.render()
}

/// Generated card files (the benchmark's mix and a Hangul-heavy one) large
/// enough for several chunks: pinned through every way of verifying.
#[test]
fn generated_card_fingerprints_are_pinned() {
    use settlegate::format::generate::{CardFile, CardRecord};
    let registry = FormatRegistry::load_dir(&root().join("formats")).expect("formats load");
    let spec = registry.get("card-settlement").unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
    let mut mix = CardFile::new(day);
    mix.records = (0..20_000).map(|i| CardRecord::synthetic(i, day)).collect();
    for (what, raw, want) in [
        (
            "the benchmark's mix",
            mix.render(),
            "e2b82bbccfa05928136c78a77c32825d2c0597882a5175fdc7370d11c27e8572",
        ),
        (
            "Hangul-heavy",
            hangul_card_file(20_000),
            "ca5438db83701dcb0ac57ed10456f13d44e71bf4c54746b0c2e66776297eb1f2",
        ),
    ] {
        let name = "CSTL_031_20261121_0001.dat";
        let ctx = FileContext {
            name,
            sidecar: None,
        };
        for (way, got) in fingerprints_every_way(spec, &raw, ctx)
            .into_iter()
            .enumerate()
        {
            assert_eq!(got, want, "{what}: way {way}");
        }
    }
}

/// The data of one fixture case with its sidecar, verified with a record
/// consumer: the facts and each record's number, offset and merchant name.
fn records_of(format: &str, case: &str) -> (Vec<u8>, FileFacts, Vec<(u64, u64, String)>) {
    let registry = FormatRegistry::load_dir(&root().join("formats")).expect("formats load");
    let (spec, file, name, sidecar) = fixture(&registry, format, case);
    let ctx = FileContext {
        name: &name,
        sidecar: sidecar.as_deref(),
    };
    let bytes = std::fs::read(&file).unwrap();
    let mut seen = Vec::new();
    let mut sink = |r: &DataRecord<'_>| {
        let name = r.fields().find(|(k, _)| *k == "merchant_name");
        seen.push((r.number, r.offset, name.unwrap().1.to_string()));
        ControlFlow::Continue(())
    };
    let facts = verify(spec, &bytes[..], ctx, &mut sink).unwrap();
    (bytes, facts, seen)
}

/// Where each data row starts: its `settle_date` at the start of a line.
fn row_starts(bytes: &[u8]) -> Vec<u64> {
    (0..bytes.len())
        .filter(|&i| (i == 0 || bytes[i - 1] == b'\n') && bytes[i..].starts_with(b"2026-11-21,"))
        .map(|i| i as u64)
        .collect()
}

/// A quoted CSV field holding a line break: a row over two lines is one
/// record, numbered as a data row, at the byte where the row starts; the
/// line break is read as LF, so the same data with CRLF throughout and with
/// LF throughout has one fingerprint.
#[test]
fn a_row_over_several_lines_is_one_record() {
    let (crlf_bytes, crlf, crlf_rows) = records_of("pg-settlement-csv", "valid-multiline-crlf");
    let (lf_bytes, lf, lf_rows) = records_of("pg-settlement-csv", "valid-multiline-lf");
    assert!(crlf.is_valid() && lf.is_valid(), "{crlf:?} {lf:?}");
    assert_ne!(crlf.checksum, lf.checksum);
    assert_eq!(crlf.fingerprint, lf.fingerprint);
    for (bytes, rows) in [(&crlf_bytes, &crlf_rows), (&lf_bytes, &lf_rows)] {
        let names: Vec<&str> = rows.iter().map(|(_, _, n)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "행복한 빵집\n강남점",
                "Coffee Lab",
                "Seoul Stationery\nMain Branch"
            ]
        );
        let numbers: Vec<u64> = rows.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 3]);
        let offsets: Vec<u64> = rows.iter().map(|(_, o, _)| *o).collect();
        assert_eq!(offsets, row_starts(bytes));
    }
    let (_, quoted, rows) = records_of("pg-settlement-csv", "valid-multiline-quotes");
    assert!(quoted.is_valid(), "{quoted:?}");
    let names: Vec<&str> = rows.iter().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "The \"Best\" Bakery\n\"Gangnam\", 1F",
            "\"\n\"",
            "Plain Name"
        ]
    );
}

/// An unquoted field holding a line break ends its row early: the error
/// names the row (as a data row number and its first byte) and says why.
#[test]
fn a_line_break_outside_quotes_is_named() {
    let (bytes, facts, _) = records_of("pg-settlement-csv", "line-break-outside-quotes");
    let error = facts.error.expect("invalid");
    assert_eq!(error.record, Some(2));
    assert_eq!(error.offset, Some(row_starts(&bytes)[1]));
    assert_eq!(error.field, None);
    assert_eq!(
        error.to_string(),
        format!(
            "record 2 (byte {}): expected 9 fields, found 3: a line break outside quotes \
             ends the row early; quote fields that contain line breaks",
            row_starts(&bytes)[1]
        )
    );
}

/// A whole file held in memory (how the gateway verifies a small stored
/// file) gives the facts of the in-order pass: a valid file, and the same
/// file cut at several sizes (so invalid where it is cut), checksum, size
/// and error alike, byte offset for byte offset.
#[test]
fn a_file_verified_whole_in_memory_gives_the_same_facts() {
    use sha2::Digest;
    let registry = FormatRegistry::load_dir(&root().join("formats")).expect("formats load");
    let spec = registry.get("card-settlement").unwrap();
    let whole = hangul_card_file(300);
    let ctx = FileContext {
        name: "CSTL_031_20261121_0001.dat",
        sidecar: None,
    };
    for size in [0, 1, 150, 202, 203, 20_000, whole.len() - 1, whole.len()] {
        let raw = &whole[..size];
        let facts = verify_whole(spec, raw, ctx, &mut ()).unwrap();
        let in_order = verify_with(spec, raw, ctx, &mut (), Parallelism::SEQUENTIAL).unwrap();
        assert_eq!(facts, in_order, "{size} bytes");
        let mut every = |_: &DataRecord<'_>| ControlFlow::Continue(());
        let decoded = verify_whole(spec, raw, ctx, &mut every).unwrap();
        assert_eq!(decoded, in_order, "{size} bytes, record by record");
        assert_eq!(facts.size, size as u64);
        assert_eq!(facts.checksum_hex(), hex::encode(sha2::Sha256::digest(raw)));
        // Cut inside a record, a file is invalid (the last record may go
        // without its line feed: cut there, it is whole).
        assert_eq!(facts.is_valid(), size + 1 >= whole.len(), "{size} bytes");
    }
}

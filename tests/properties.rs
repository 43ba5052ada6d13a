//! Property tests: write → verify round trips, and the fingerprint's
//! invariants (same under CRLF↔LF, BOM, record order and numbering, creation
//! stamp and file sequence, and CRLF↔LF inside a quoted CSV field; different
//! when an amount, a key, the business date or a field's line breaks change).

use std::ops::ControlFlow;
use std::path::Path;

use chrono::NaiveDate;
use proptest::prelude::*;
use rust_decimal::Decimal;
use settlegate::format::generate::{
    BankFile, BankRecord, CardFile, CardRecord, LineEnding, PgFile, PgRow,
};
use settlegate::format::{
    DataRecord, FileContext, FileFacts, FormatRegistry, FormatSpec, Parallelism, verify,
    verify_with,
};

fn registry() -> FormatRegistry {
    FormatRegistry::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("formats")).unwrap()
}

fn spec(id: &str) -> FormatSpec {
    registry().get(id).unwrap().clone()
}

/// What the sink saw of each record: record key, amount, all fields.
type Seen = Vec<(String, Decimal, Vec<(String, String)>)>;

/// Verify and collect (record key, amount, all fields) per record.
fn run(spec: &FormatSpec, name: &str, bytes: &[u8], sidecar: Option<&[u8]>) -> (FileFacts, Seen) {
    let mut seen = Vec::new();
    let mut sink = |r: &DataRecord<'_>| {
        // The JSON kept with each entry says exactly what the fields say.
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r.fields_json()).expect("fields JSON");
        assert!(
            r.fields()
                .all(|(k, v)| json.get(k).and_then(|j| j.as_str()) == Some(v))
        );
        assert_eq!(json.len(), r.fields().count());
        seen.push((
            r.record_key.to_string(),
            r.amount,
            r.fields()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        ControlFlow::Continue(())
    };
    let facts = verify(spec, bytes, FileContext { name, sidecar }, &mut sink).unwrap();
    (facts, seen)
}

fn day() -> impl Strategy<Value = NaiveDate> {
    (1u32..=30).prop_map(|d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap())
}

/// Names that exercise CP949: Hangul, CP949-only syllables, ASCII, mixed.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("홍길동 상회".to_string()),
        Just("똠양꿍 햏님 식당".to_string()),
        Just("SETTLE MART".to_string()),
        "[A-Z][A-Z0-9 ]{0,10}[A-Z]".prop_map(|s| s),
        Just("가나다라마바사아자차카타파하가나다라마바".to_string()),
    ]
}

fn card_record() -> impl Strategy<Value = CardRecord> {
    (
        "[A-Z0-9]{1,15}",
        name(),
        day(),
        "[0-9]{8}",
        any::<bool>(),
        0u64..1_000_000_000_000,
        0u64..=1000,
        day(),
    )
        .prop_map(
            |(
                merchant_no,
                merchant_name,
                txn_date,
                approval_no,
                cancel,
                sales,
                fee_permille,
                payout_date,
            )| CardRecord {
                merchant_no,
                merchant_name,
                txn_date,
                approval_no,
                card_no: "941012******3456".into(),
                cancel,
                sales,
                fee: sales / 1000 * fee_permille / 1000,
                payout_date,
            },
        )
}

fn card_file() -> impl Strategy<Value = CardFile> {
    (
        day(),
        prop::collection::vec(card_record(), 0..25),
        any::<bool>(),
    )
        .prop_map(|(d, records, lf)| {
            let mut f = CardFile::new(d);
            f.records = records;
            f.line_ending = if lf { LineEnding::Lf } else { LineEnding::CrLf };
            f
        })
}

fn card_facts(f: &CardFile) -> FileFacts {
    let bytes = f.render();
    let (facts, _) = run(&spec("card-settlement"), &f.file_name(), &bytes, None);
    assert!(facts.is_valid(), "{:?}", facts.error);
    facts
}

fn bank_file() -> impl Strategy<Value = BankFile> {
    let rec = (
        0u16..1000,
        "[0-9]{10,14}",
        0u64..10_000_000_000,
        prop_oneof![Just("0000"), Just("E101"), Just("9999")],
        name(),
        "[A-Z0-9]{20}",
    )
        .prop_map(
            |(payee_bank, account_no, amount, code, payee_name, transfer_id)| BankRecord {
                payee_bank,
                account_no,
                amount,
                result_code: code.into(),
                payee_name,
                transfer_id,
                memo: "급여".into(),
            },
        );
    (day(), prop::collection::vec(rec, 0..25)).prop_map(|(d, records)| BankFile {
        bank_code: 88,
        company_code: "SGCO0001".into(),
        business_date: d,
        file_seq: 1,
        created_time: "021000".into(),
        records,
    })
}

fn pg_file() -> impl Strategy<Value = PgFile> {
    let row = (
        "[A-Z0-9]{4,10}",
        prop_oneof![
            Just("Shop, Inc.".to_string()),
            Just("\"Quoted\" Mart \\ Co".to_string()),
            Just("홍길동 상회".to_string()),
            Just("Two\r\nLines".to_string()),
            Just("서울문구\n\"본점\", 2층".to_string()),
            "[a-z]{1,12}"
        ],
        "[A-Z0-9]{12}",
        any::<bool>(),
        any::<bool>(),
        0i64..100_000_000,
        0i64..1000,
    )
        .prop_map(
            |(merchant_id, merchant_name, txn_id, refund, usd, amount, fee)| {
                let scale = if usd { 2 } else { 0 };
                PgRow {
                    merchant_id,
                    merchant_name,
                    txn_id,
                    refund,
                    currency: if usd { "USD" } else { "KRW" }.into(),
                    amount: Decimal::new(amount, scale),
                    fee: if refund {
                        Decimal::ZERO
                    } else {
                        Decimal::new(fee, scale)
                    },
                }
            },
        );
    (
        day(),
        prop::collection::vec(row, 0..25),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(d, rows, bom, crlf)| PgFile {
            pg_code: "PG01".into(),
            business_date: d,
            seq: 1,
            bom,
            line_ending: if crlf {
                LineEnding::CrLf
            } else {
                LineEnding::Lf
            },
            rows,
        })
}

fn pg_facts(f: &PgFile) -> (FileFacts, Seen) {
    let (csv, ctl) = f.render();
    let out = run(&spec("pg-settlement-csv"), &f.file_name(), &csv, Some(&ctl));
    assert!(out.0.is_valid(), "{:?}", out.0.error);
    out
}

/// A byte-level edit: overwrite, delete or insert at a position.
fn edit() -> impl Strategy<Value = (prop::sample::Index, u8, u8)> {
    (any::<prop::sample::Index>(), any::<u8>(), 0u8..3)
}

fn apply(bytes: &mut Vec<u8>, (at, byte, kind): &(prop::sample::Index, u8, u8)) {
    if bytes.is_empty() {
        return;
    }
    let i = at.index(bytes.len());
    match kind {
        0 => bytes[i] = *byte,
        1 => {
            bytes.remove(i);
        }
        _ => bytes.insert(i, *byte),
    }
}

/// The facts of `bytes` checked in order must equal those checked in chunks
/// of `chunk_bytes` over several threads, and those found decoding every
/// record for a record consumer (the general path, which compiled record
/// plans only save work for), whatever the bytes are.
fn same_both_ways(
    id: &str,
    name: &str,
    bytes: &[u8],
    chunk_bytes: usize,
) -> Result<(), TestCaseError> {
    let spec = spec(id);
    let ctx = FileContext {
        name,
        sidecar: None,
    };
    let in_order = verify_with(&spec, bytes, ctx, &mut (), Parallelism::SEQUENTIAL).unwrap();
    let par = Parallelism {
        workers: 3,
        chunk_bytes,
    };
    let chunked = verify_with(&spec, bytes, ctx, &mut (), par).unwrap();
    prop_assert_eq!(&chunked, &in_order);
    let mut every = |_: &DataRecord<'_>| ControlFlow::Continue(());
    let decoded = verify_with(&spec, bytes, ctx, &mut every, Parallelism::SEQUENTIAL).unwrap();
    prop_assert_eq!(decoded, in_order);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_way_of_verifying_finds_the_same(
        card in card_file(),
        bank in bank_file(),
        edits in prop::collection::vec(edit(), 0..3),
        chunk_bytes in 1usize..1500,
        swap in any::<(prop::sample::Index, prop::sample::Index)>(),
    ) {
        let mut bytes = card.render();
        for e in &edits {
            apply(&mut bytes, e);
        }
        same_both_ways("card-settlement", &card.file_name(), &bytes, chunk_bytes)?;
        // Whole records out of place: a header or trailer in the middle, a
        // sequence break at a chunk boundary.
        let mut lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
        if lines.len() > 1 {
            let (i, j) = (swap.0.index(lines.len()), swap.1.index(lines.len()));
            lines.swap(i, j);
            same_both_ways("card-settlement", &card.file_name(), &lines.concat(), chunk_bytes)?;
            // A record missing: the numbers after it are consecutive again.
            lines.remove(i);
        }
        same_both_ways("card-settlement", &card.file_name(), &lines.concat(), chunk_bytes)?;
        let mut bytes = bank.render();
        for e in &edits {
            apply(&mut bytes, e);
        }
        same_both_ways("bank-transfer-result", &bank.file_name(), &bytes, chunk_bytes)?;
    }

    #[test]
    fn card_round_trip(f in card_file()) {
        let bytes = f.render();
        let (facts, seen) = run(&spec("card-settlement"), &f.file_name(), &bytes, None);
        prop_assert!(facts.is_valid(), "{:?}", facts.error);
        prop_assert_eq!(facts.records, f.records.len() as u64);
        prop_assert_eq!(seen.len(), f.records.len());
        for (r, (key, amount, fields)) in f.records.iter().zip(&seen) {
            let want_key = format!("{}|{}|{}|{}", r.merchant_no, r.txn_date, r.approval_no, if r.cancel { "02" } else { "01" });
            prop_assert_eq!(key, &want_key);
            prop_assert_eq!(*amount, Decimal::from_i128_with_scale(r.settle(), 0));
            let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap();
            prop_assert_eq!(get("merchant_name"), r.merchant_name.clone());
            prop_assert_eq!(get("merchant_no"), r.merchant_no.clone());
        }
        let t = f.totals();
        let total = |n: &str| facts.totals.iter().find(|(k, _)| k == n).unwrap().1;
        prop_assert_eq!(total("total_settle"), Decimal::from_i128_with_scale(t.settle, 0));
        prop_assert_eq!(total("total_sales"), Decimal::from_i128_with_scale(t.sales as i128, 0));
    }

    #[test]
    fn card_fingerprint_ignores_volatile_order_and_line_endings(
        f in card_file(),
        seed in any::<u64>(),
        seq in 2u16..9999,
        hour in 0u32..24,
    ) {
        let mut g = f.clone();
        g.line_ending = match f.line_ending { LineEnding::CrLf => LineEnding::Lf, LineEnding::Lf => LineEnding::CrLf };
        g.file_seq = seq;
        g.created_at = f.created_at.date().and_hms_opt(hour, 59, 59).unwrap();
        // Reorder (the writer renumbers seq_no 1, 2, 3… in the new order).
        let n = g.records.len();
        if n > 1 {
            g.records.rotate_left((seed as usize) % n);
            g.records.swap(0, (seed as usize / 7) % n);
        }
        let (a, b) = (card_facts(&f), card_facts(&g));
        prop_assert_eq!(a.fingerprint, b.fingerprint);
        prop_assert_ne!(a.checksum, b.checksum);
        // Another file name (one the pattern does not match) changes nothing.
        let (c, _) = run(&spec("card-settlement"), "COPY_OF_TODAYS_FILE.txt", &f.render(), None);
        prop_assert_eq!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn card_fingerprint_sees_amounts_keys_and_dates(f in card_file(), pick in any::<prop::sample::Index>(), what in 0u8..4) {
        let mut g = f.clone();
        match what {
            0..=2 if !g.records.is_empty() => {
                let i = pick.index(g.records.len());
                let r = &mut g.records[i];
                match what {
                    0 => r.sales += 1,
                    1 => r.approval_no = if r.approval_no == "00000000" { "00000001".into() } else { "00000000".into() },
                    _ => r.cancel = !r.cancel,
                }
            }
            _ => g.business_date = f.business_date.succ_opt().unwrap(),
        }
        prop_assert_ne!(card_facts(&f).fingerprint, card_facts(&g).fingerprint);
    }

    #[test]
    fn bank_round_trip_and_order(f in bank_file(), seed in any::<usize>()) {
        let spec = spec("bank-transfer-result");
        let bytes = f.render();
        let (facts, seen) = run(&spec, &f.file_name(), &bytes, None);
        prop_assert!(facts.is_valid(), "{:?}", facts.error);
        prop_assert_eq!(bytes.len() % 120, 0);
        for (r, (key, amount, _)) in f.records.iter().zip(&seen) {
            prop_assert_eq!(key, &r.transfer_id);
            let fed = if r.result_code == "0000" { Decimal::from(r.amount) } else { Decimal::ZERO };
            prop_assert_eq!(*amount, fed);
        }
        let mut g = f.clone();
        if !g.records.is_empty() {
            let n = g.records.len();
            g.records.rotate_left(seed % n);
        }
        g.created_time = "235959".into();
        g.file_seq = 2;
        let (facts2, _) = run(&spec, &g.file_name(), &g.render(), None);
        prop_assert_eq!(facts.fingerprint, facts2.fingerprint);
        if !g.records.is_empty() {
            g.records[0].amount += 1;
            let (facts3, _) = run(&spec, &g.file_name(), &g.render(), None);
            prop_assert!(facts3.is_valid());
            prop_assert_ne!(facts.fingerprint, facts3.fingerprint);
        }
    }

    #[test]
    fn pg_round_trip_and_invariants(f in pg_file(), seed in any::<usize>()) {
        let (facts, seen) = pg_facts(&f);
        for (r, (key, amount, fields)) in f.rows.iter().zip(&seen) {
            prop_assert_eq!(key, &r.txn_id);
            prop_assert_eq!(*amount, r.net());
            let name = fields.iter().find(|(k, _)| k == "merchant_name").unwrap().1.clone();
            // A line break in a field is read as LF, however it was written.
            prop_assert_eq!(name, r.merchant_name.replace("\r\n", "\n"));
        }
        let mut g = f.clone();
        g.bom = !f.bom;
        g.line_ending = match f.line_ending { LineEnding::CrLf => LineEnding::Lf, LineEnding::Lf => LineEnding::CrLf };
        g.seq = 7;
        if !g.rows.is_empty() {
            let n = g.rows.len();
            g.rows.rotate_left(seed % n);
        }
        prop_assert_eq!(facts.fingerprint, pg_facts(&g).0.fingerprint);
        if !g.rows.is_empty() {
            g.rows[0].amount += Decimal::ONE;
            prop_assert_ne!(facts.fingerprint, pg_facts(&g).0.fingerprint);
        }
        let mut h = f.clone();
        h.business_date = f.business_date.succ_opt().unwrap();
        prop_assert_ne!(facts.fingerprint, pg_facts(&h).0.fingerprint);
    }

    /// A line break inside a quoted CSV field is content: written CRLF, LF
    /// or a lone CR, it gives one fingerprint (whatever the file's line
    /// endings); removed, or replaced by a space, it gives another.
    #[test]
    fn pg_line_breaks_in_fields_are_content(
        f in pg_file(),
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!f.rows.is_empty());
        let i = pick.index(f.rows.len());
        let fingerprint_with = |line_break: &str| {
            let mut g = f.clone();
            let name = g.rows[i].merchant_name.replace("\r\n", " ").replace('\n', " ");
            let chars: Vec<char> = name.chars().collect();
            let cut = at.index(chars.len() + 1);
            let (head, tail): (String, String) =
                (chars[..cut].iter().collect(), chars[cut..].iter().collect());
            g.rows[i].merchant_name = format!("{head}{line_break}{tail}");
            pg_facts(&g).0.fingerprint
        };
        let lf = fingerprint_with("\n");
        prop_assert_eq!(lf, fingerprint_with("\r\n"));
        prop_assert_eq!(lf, fingerprint_with("\r"));
        prop_assert_ne!(lf, fingerprint_with(""));
        prop_assert_ne!(lf, fingerprint_with(" "));
        prop_assert_ne!(lf, fingerprint_with("\n\n"));
    }

    /// Whatever the bytes, the verifier answers (valid or an error) and never panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), cut in any::<prop::sample::Index>()) {
        let reg = registry();
        for spec in reg.iter() {
            let (facts, _) = run(spec, "PGSTL_PG01_20261121_01.csv", &bytes, Some(b"count=0\n"));
            prop_assert!(!facts.is_valid() || facts.fingerprint.is_some());
        }
        // A valid file cut anywhere before its final line end is invalid.
        let mut f = CardFile::new(NaiveDate::from_ymd_opt(2026, 11, 21).unwrap());
        f.records = (0..3).map(|i| CardRecord::synthetic(i, f.business_date)).collect();
        let full = f.render();
        let at = cut.index(full.len() - 2);
        let (facts, _) = run(&spec("card-settlement"), &f.file_name(), &full[..at], None);
        prop_assert!(!facts.is_valid());
    }
}

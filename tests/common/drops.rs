//! Files dropped into inboxes, and what is found there afterwards.

use std::path::Path;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use settlegate::format::generate::{BankFile, BankRecord, LineEnding, PgFile, PgRow};

use super::Env;

/// The entries of a directory (none when it is missing).
pub fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Names of the files claimed from an inbox and not finished yet
/// (`.taking/<owner>/<n>.<name>`, or `.taking/<owner>/<n>/<name>`).
pub fn claimed_files(inbox: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for owner in files_in(&inbox.join(".taking")) {
        let dir = inbox.join(".taking").join(&owner);
        for entry in files_in(&dir) {
            match entry.split_once('.') {
                Some((n, name)) if n.bytes().all(|b| b.is_ascii_digit()) => {
                    out.push(name.to_string())
                }
                _ => out.extend(files_in(&dir.join(entry))),
            }
        }
    }
    out
}

/// Drop a file into an inbox: either written in place, or written under a
/// temporary name and renamed in.
pub fn drop_file(inbox: &Path, name: &str, bytes: &[u8], via_temp: bool) {
    if via_temp {
        let tmp = inbox.join(format!("{name}.part"));
        std::fs::write(&tmp, bytes).expect("write temp");
        std::fs::rename(&tmp, inbox.join(name)).expect("rename");
    } else {
        std::fs::write(inbox.join(name), bytes).expect("write");
    }
}

/// A bank transfer-result file for 2026-01-01 + `k` days.
pub fn bank(k: u64) -> BankFile {
    BankFile {
        bank_code: 88,
        company_code: "SGCO0001".into(),
        business_date: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date") + chrono::Days::new(k),
        file_seq: 1,
        created_time: "021000".into(),
        records: (0..3)
            .map(|i| BankRecord {
                payee_bank: 4,
                account_no: format!("{:014}", k * 10 + i),
                amount: 1000 + i,
                result_code: if i == 2 { "E101".into() } else { "0000".into() },
                payee_name: "홍길동".into(),
                transfer_id: format!("T{k:09}{i:010}"),
                memo: "급여".into(),
            })
            .collect(),
    }
}

/// A PG settlement CSV (with its control file) for 2026-11-21, sequence `k + 1`.
pub fn pg(k: u64) -> PgFile {
    PgFile {
        pg_code: "PG01".into(),
        business_date: NaiveDate::from_ymd_opt(2026, 11, 21).expect("date"),
        seq: k as u16 + 1,
        bom: k.is_multiple_of(2),
        line_ending: LineEnding::CrLf,
        rows: (0..2)
            .map(|i| PgRow {
                merchant_id: format!("M{k}"),
                merchant_name: "Shop, Inc.".into(),
                txn_id: format!("PGTX{k:06}{i}"),
                refund: false,
                currency: "KRW".into(),
                amount: Decimal::from(10_000 + i),
                fee: Decimal::from(100),
            })
            .collect(),
    }
}

/// `files --json`.
pub fn ledger_files(env: &Env) -> Vec<serde_json::Value> {
    let (code, v) = env.json(&["files", "--json"]);
    assert_eq!(code, 0);
    v.as_array().cloned().unwrap_or_default()
}

/// A bank transfer-result file for 2026-01-01 + `k` days with `n` transfers
/// (a large payout file).
pub fn big_bank(k: u64, n: u64) -> BankFile {
    let mut f = bank(k);
    let r = f.records[0].clone();
    f.records = (0..n)
        .map(|i| BankRecord {
            account_no: format!("{:014}", k * 1_000_000 + i),
            transfer_id: format!("T{k:09}{i:010}"),
            ..r.clone()
        })
        .collect();
    f
}

//! Writers of valid files for the three shipped layouts, from a model. Used by
//! property tests (render a model, verify it, compare), by the incident
//! replay tests, and by the benchmark generator (`settlegate-generate`),
//! which streams files of any size.

use std::io::{self, Write};

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// Line ending written after each record of line-terminated layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    CrLf,
    Lf,
}

impl LineEnding {
    fn bytes(self) -> &'static [u8] {
        match self {
            LineEnding::CrLf => b"\r\n",
            LineEnding::Lf => b"\n",
        }
    }
}

/// Text encoded in CP949, cut at a character boundary to fit `len` bytes and
/// padded with spaces.
fn text(out: &mut Vec<u8>, s: &str, len: usize) {
    let start = out.len();
    for ch in s.chars() {
        let mut tmp = [0u8; 4];
        let (bytes, _, unmappable) = encoding_rs::EUC_KR.encode(ch.encode_utf8(&mut tmp));
        if unmappable || out.len() - start + bytes.len() > len {
            break;
        }
        out.extend_from_slice(&bytes);
    }
    out.resize(start + len, b' ');
}

/// Zero-padded digits; values too wide for the field keep their low digits
/// (models keep values in range, so this never happens in valid files).
fn digits(out: &mut Vec<u8>, n: u128, len: usize) {
    let s = format!("{n:0len$}");
    out.extend_from_slice(&s.as_bytes()[s.len() - len..]);
}

fn date(out: &mut Vec<u8>, d: NaiveDate) {
    out.extend_from_slice(d.format("%Y%m%d").to_string().as_bytes());
}

/// A card-settlement file.
#[derive(Debug, Clone, PartialEq)]
pub struct CardFile {
    pub sender_code: u16,
    pub receiver_code: String,
    pub business_date: NaiveDate,
    pub created_at: NaiveDateTime,
    pub file_seq: u16,
    /// `P` production, `T` test, `D` drill.
    pub run_mode: char,
    pub sender_name: String,
    pub records: Vec<CardRecord>,
    pub line_ending: LineEnding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    pub merchant_no: String,
    pub merchant_name: String,
    pub txn_date: NaiveDate,
    pub approval_no: String,
    pub card_no: String,
    pub cancel: bool,
    pub sales: u64,
    pub fee: u64,
    pub payout_date: NaiveDate,
}

impl CardRecord {
    /// The signed settlement amount: sales − fee, negated for a cancel.
    pub fn settle(&self) -> i128 {
        let v = i128::from(self.sales) - i128::from(self.fee);
        if self.cancel { -v } else { v }
    }

    /// A deterministic record for benchmarks: the `i`-th of a day, a third
    /// of the names in Hangul, every 17th a cancel.
    pub fn synthetic(i: u64, day: NaiveDate) -> CardRecord {
        let sales = 1_000 + (i.wrapping_mul(7919) % 9_000_000);
        CardRecord {
            merchant_no: format!("M{:014}", i % 50_000),
            merchant_name: if i.is_multiple_of(3) {
                "홍길동 상회".into()
            } else {
                "SETTLE MART".into()
            },
            txn_date: day,
            approval_no: format!("{:08}", i % 100_000_000),
            card_no: "941012******3456".into(),
            cancel: i.is_multiple_of(17),
            sales,
            fee: sales / 50,
            payout_date: day + chrono::Days::new(2),
        }
    }

    /// The `i`-th record of a day in the given mix: each of the 50 000
    /// merchants keeps one name (Hangul for `mix.hangul_percent` of them, of
    /// varied length, CP949-only syllables included), and
    /// `mix.cancel_percent` of the records are cancels or refunds
    /// (`txn_type` 02), spread evenly.
    pub fn synthetic_mix(i: u64, day: NaiveDate, mix: CardMix) -> CardRecord {
        let mut r = CardRecord::synthetic(i, day);
        let merchant = i % 50_000;
        let h = spread(merchant);
        r.merchant_name = if h % 100 < u64::from(mix.hangul_percent) {
            hangul_name(h / 100)
        } else {
            format!("SETTLE MART {:05}", merchant)
        };
        r.cancel = spread(i ^ 0x5eed) % 1000 < u64::from(mix.cancel_percent) * 10;
        r
    }
}

/// The mix of a generated card file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardMix {
    /// Share of merchants whose name is in Hangul, 0–100.
    pub hangul_percent: u8,
    /// Share of records that are cancels or refunds, 0–100.
    pub cancel_percent: u8,
}

/// A well-mixed 64-bit function of `x` (splitmix64's finaliser), so shares
/// are spread evenly over a file without a random number generator.
fn spread(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A Korean merchant name from `n`: a name, a kind of business and a branch,
/// 3 to 18 syllables (6 to 40 bytes in CP949).
fn hangul_name(n: u64) -> String {
    const FIRST: [&str; 16] = [
        "행복한",
        "똠양꿍",
        "햏",
        "우리동네",
        "참좋은",
        "서울",
        "대박",
        "한국",
        "푸른하늘",
        "새마을",
        "으뜸",
        "늘푸른",
        "다정한",
        "제일",
        "착한",
        "강남",
    ];
    const KIND: [&str; 12] = [
        "빵집",
        "편의점",
        "커피전문점",
        "주유소",
        "약국",
        "분식",
        "정육점",
        "꽃집",
        "세탁소",
        "치킨",
        "한식당",
        "문구점",
    ];
    const BRANCH: [&str; 8] = [
        "",
        " 강남점",
        " 부산 해운대점",
        "\u{3000}본점",
        " 2호점",
        " 역삼역점",
        " 대전 둔산점",
        " 광주 상무지구점",
    ];
    format!(
        "{}{}{}",
        FIRST[(n % 16) as usize],
        KIND[(n / 16 % 12) as usize],
        BRANCH[(n / 192 % 8) as usize]
    )
}

/// Running totals of a card file, for the trailer.
#[derive(Debug, Default, Clone, Copy)]
pub struct CardTotals {
    pub count: u64,
    pub sales: u128,
    pub fee: u128,
    pub settle: i128,
}

impl CardFile {
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut r = Vec::with_capacity(200);
        r.push(b'H');
        r.extend_from_slice(b"CSTL");
        digits(&mut r, u128::from(self.sender_code), 3);
        text(&mut r, &self.receiver_code, 10);
        date(&mut r, self.business_date);
        r.extend_from_slice(
            self.created_at
                .format("%Y%m%d%H%M%S")
                .to_string()
                .as_bytes(),
        );
        digits(&mut r, u128::from(self.file_seq), 4);
        r.push(self.run_mode as u8);
        text(&mut r, &self.sender_name, 30);
        r.resize(200, b' ');
        r
    }

    pub fn record_bytes(rec: &CardRecord, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(b'D');
        digits(out, u128::from(seq), 7);
        text(out, &rec.merchant_no, 15);
        text(out, &rec.merchant_name, 40);
        date(out, rec.txn_date);
        text(out, &rec.approval_no, 8);
        text(out, &rec.card_no, 16);
        out.extend_from_slice(if rec.cancel { b"02" } else { b"01" });
        digits(out, u128::from(rec.sales), 13);
        digits(out, u128::from(rec.fee), 11);
        let settle = rec.settle();
        out.push(if settle < 0 { b'-' } else { b'+' });
        digits(out, settle.unsigned_abs(), 13);
        date(out, rec.payout_date);
        out.resize(start + 200, b' ');
    }

    pub fn trailer_bytes(t: &CardTotals) -> Vec<u8> {
        let mut r = Vec::with_capacity(200);
        r.push(b'T');
        digits(&mut r, u128::from(t.count), 7);
        digits(&mut r, t.sales, 15);
        digits(&mut r, t.fee, 15);
        r.push(if t.settle < 0 { b'-' } else { b'+' });
        digits(&mut r, t.settle.unsigned_abs(), 15);
        r.resize(200, b' ');
        r
    }

    pub fn totals(&self) -> CardTotals {
        let mut t = CardTotals::default();
        for r in &self.records {
            t.add(r);
        }
        t
    }

    pub fn file_name(&self) -> String {
        format!(
            "CSTL_{:03}_{}_{:04}.dat",
            self.sender_code,
            self.business_date.format("%Y%m%d"),
            self.file_seq
        )
    }

    pub fn render(&self) -> Vec<u8> {
        let le = self.line_ending.bytes();
        let mut out = Vec::with_capacity((self.records.len() + 2) * 202);
        out.extend_from_slice(&self.header_bytes());
        out.extend_from_slice(le);
        for (i, r) in self.records.iter().enumerate() {
            CardFile::record_bytes(r, i as u64 + 1, &mut out);
            out.extend_from_slice(le);
        }
        out.extend_from_slice(&CardFile::trailer_bytes(&self.totals()));
        out.extend_from_slice(le);
        out
    }

    /// Stream a file of `n` synthetic records (the model's own records are
    /// ignored): constant memory, any size.
    pub fn write_synthetic<W: Write>(&self, n: u64, w: &mut W) -> io::Result<CardTotals> {
        self.write_synthetic_with(n, w, CardRecord::synthetic)
    }

    /// [`CardFile::write_synthetic`] with records in the given mix.
    pub fn write_synthetic_mix<W: Write>(
        &self,
        n: u64,
        w: &mut W,
        mix: CardMix,
    ) -> io::Result<CardTotals> {
        self.write_synthetic_with(n, w, |i, day| CardRecord::synthetic_mix(i, day, mix))
    }

    fn write_synthetic_with<W: Write>(
        &self,
        n: u64,
        w: &mut W,
        record: impl Fn(u64, NaiveDate) -> CardRecord,
    ) -> io::Result<CardTotals> {
        let le = self.line_ending.bytes();
        w.write_all(&self.header_bytes())?;
        w.write_all(le)?;
        let mut t = CardTotals::default();
        let mut buf = Vec::with_capacity(1 << 20);
        for i in 0..n {
            let r = record(i, self.business_date);
            CardFile::record_bytes(&r, i + 1, &mut buf);
            buf.extend_from_slice(le);
            t.add(&r);
            if buf.len() >= (1 << 20) - 256 {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        w.write_all(&buf)?;
        w.write_all(&CardFile::trailer_bytes(&t))?;
        w.write_all(le)?;
        Ok(t)
    }

    /// A production file with no records, for a given day.
    pub fn new(business_date: NaiveDate) -> CardFile {
        CardFile {
            sender_code: 31,
            receiver_code: "SETTLEGATE".into(),
            business_date,
            created_at: business_date
                .succ_opt()
                .unwrap_or(business_date)
                .and_hms_opt(2, 10, 0)
                .unwrap_or_default(),
            file_seq: 1,
            run_mode: 'P',
            sender_name: "카드사".into(),
            records: Vec::new(),
            line_ending: LineEnding::CrLf,
        }
    }
}

impl CardTotals {
    pub fn add(&mut self, r: &CardRecord) {
        self.count += 1;
        self.sales += u128::from(r.sales);
        self.fee += u128::from(r.fee);
        self.settle += r.settle();
    }
}

/// A bank-transfer-result file.
#[derive(Debug, Clone, PartialEq)]
pub struct BankFile {
    pub bank_code: u16,
    pub company_code: String,
    pub business_date: NaiveDate,
    pub file_seq: u8,
    pub created_time: String,
    pub records: Vec<BankRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankRecord {
    pub payee_bank: u16,
    pub account_no: String,
    pub amount: u64,
    /// `0000` is success.
    pub result_code: String,
    pub payee_name: String,
    pub transfer_id: String,
    pub memo: String,
}

impl BankFile {
    pub fn file_name(&self) -> String {
        format!(
            "TRR_{:03}_{}_{:02}.dat",
            self.bank_code,
            self.business_date.format("%Y%m%d"),
            self.file_seq
        )
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.records.len() + 2) * 120);
        self.header(&mut out);
        let (mut ok_n, mut ok_sum, mut fail_n, mut fail_sum) = (0u128, 0u128, 0u128, 0u128);
        for (i, r) in self.records.iter().enumerate() {
            let start = out.len();
            out.push(b'D');
            digits(&mut out, i as u128 + 1, 6);
            digits(&mut out, u128::from(r.payee_bank), 3);
            text(&mut out, &r.account_no, 14);
            digits(&mut out, u128::from(r.amount), 13);
            text(&mut out, &r.result_code, 4);
            text(&mut out, &r.payee_name, 20);
            text(&mut out, &r.transfer_id, 20);
            text(&mut out, &r.memo, 16);
            out.resize(start + 120, b' ');
            if r.result_code == "0000" {
                ok_n += 1;
                ok_sum += u128::from(r.amount);
            } else {
                fail_n += 1;
                fail_sum += u128::from(r.amount);
            }
        }
        let start = out.len();
        out.push(b'E');
        digits(&mut out, self.records.len() as u128, 6);
        digits(&mut out, ok_n, 6);
        digits(&mut out, ok_sum, 15);
        digits(&mut out, fail_n, 6);
        digits(&mut out, fail_sum, 15);
        out.resize(start + 120, b' ');
        out
    }
}

impl BankFile {
    /// The `S` header both files share: bank, company, business date,
    /// sequence, creation time.
    fn header(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(b'S');
        digits(out, u128::from(self.bank_code), 3);
        text(out, &self.company_code, 8);
        date(out, self.business_date);
        digits(out, u128::from(self.file_seq), 2);
        text(out, &self.created_time, 6);
        out.resize(start + 120, b' ');
    }

    /// The transfer request these results answer (what settlegate sends
    /// the bank): the same business key, `TRQ_…`.
    pub fn request_file_name(&self) -> String {
        self.file_name().replacen("TRR_", "TRQ_", 1)
    }

    /// The bank-transfer-request file of these transfers.
    pub fn render_request(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.records.len() + 2) * 120);
        self.header(&mut out);
        let mut total = 0u128;
        for (i, r) in self.records.iter().enumerate() {
            let start = out.len();
            out.push(b'D');
            digits(&mut out, i as u128 + 1, 6);
            digits(&mut out, u128::from(r.payee_bank), 3);
            text(&mut out, &r.account_no, 14);
            digits(&mut out, u128::from(r.amount), 13);
            text(&mut out, &r.payee_name, 20);
            text(&mut out, &r.transfer_id, 20);
            text(&mut out, &r.memo, 16);
            out.resize(start + 120, b' ');
            total += u128::from(r.amount);
        }
        let start = out.len();
        out.push(b'E');
        digits(&mut out, self.records.len() as u128, 6);
        digits(&mut out, total, 15);
        out.resize(start + 120, b' ');
        out
    }
}

/// A pg-settlement-csv file and its control file.
#[derive(Debug, Clone, PartialEq)]
pub struct PgFile {
    pub pg_code: String,
    pub business_date: NaiveDate,
    pub seq: u16,
    pub bom: bool,
    pub line_ending: LineEnding,
    pub rows: Vec<PgRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgRow {
    pub merchant_id: String,
    pub merchant_name: String,
    pub txn_id: String,
    pub refund: bool,
    /// `KRW` or `USD`.
    pub currency: String,
    /// Positive magnitude; negated on refunds.
    pub amount: Decimal,
    pub fee: Decimal,
}

impl PgRow {
    pub fn net(&self) -> Decimal {
        self.signed_amount() - self.fee
    }

    pub fn signed_amount(&self) -> Decimal {
        if self.refund {
            -self.amount
        } else {
            self.amount
        }
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl PgFile {
    pub fn file_name(&self) -> String {
        format!(
            "PGSTL_{}_{}_{:02}.csv",
            self.pg_code,
            self.business_date.format("%Y%m%d"),
            self.seq
        )
    }

    pub fn control_name(&self) -> String {
        self.file_name().replace(".csv", ".ctl")
    }

    /// The CSV bytes and the control file's bytes.
    pub fn render(&self) -> (Vec<u8>, Vec<u8>) {
        let le = std::str::from_utf8(self.line_ending.bytes()).unwrap_or("\n");
        let mut out = String::new();
        if self.bom {
            out.push('\u{feff}');
        }
        out.push_str(
            "settle_date,merchant_id,merchant_name,txn_id,txn_type,currency,amount,fee,net",
        );
        out.push_str(le);
        let mut net_total = Decimal::ZERO;
        for r in &self.rows {
            let net = r.net();
            net_total += net;
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}{le}",
                self.business_date.format("%Y-%m-%d"),
                csv_cell(&r.merchant_id),
                csv_cell(&r.merchant_name),
                csv_cell(&r.txn_id),
                if r.refund { "REFUND" } else { "PAY" },
                r.currency,
                r.signed_amount(),
                r.fee,
                net
            ));
        }
        let bytes = out.into_bytes();
        let ctl = format!(
            "count={}\nnet_total={}\nsha256={}\n",
            self.rows.len(),
            net_total.normalize(),
            hex::encode(Sha256::digest(&bytes))
        );
        (bytes, ctl.into_bytes())
    }
}

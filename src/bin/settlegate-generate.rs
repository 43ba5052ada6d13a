//! Writes valid files of any size for benchmarks and load tests:
//! `settlegate-generate card-settlement --records 5000000 OUT`.
//! Streams with constant memory.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::Parser;
use settlegate::format::generate::{CardFile, CardMix, CardRecord, LineEnding};

#[derive(Parser)]
#[command(about = "Write a valid synthetic settlement file")]
struct Args {
    /// Format id; `card-settlement` is supported.
    format: String,
    /// Number of data records.
    #[arg(long)]
    records: Option<u64>,
    /// Approximate size instead of a record count, e.g. `1GiB`, `64MiB`.
    #[arg(long)]
    size: Option<String>,
    /// Business date (YYYY-MM-DD).
    #[arg(long, default_value = "2026-11-21")]
    date: NaiveDate,
    /// Write LF instead of CRLF.
    #[arg(long)]
    lf: bool,
    /// Also write the file's settlement entries as CSV (record_no, record_key,
    /// amount, fields), for loading benchmarks against `sqlite3 .import` and
    /// `psql \copy`.
    #[arg(long)]
    entries_csv: Option<PathBuf>,
    /// Write this many distinct files (distinct business keys and record
    /// keys, `--records` each) into OUT, a directory.
    #[arg(long)]
    files: Option<u64>,
    /// Share of merchant names in Hangul, in percent (e.g. `95` for data
    /// shaped like a Korean acquirer's). Without this and `--cancels`, a
    /// third of the records carry one Hangul name and every 17th is a cancel.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    hangul: Option<u8>,
    /// Share of records that are cancels or refunds, in percent (default 6
    /// when `--hangul` is given).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    cancels: Option<u8>,
    /// Output path (a directory with --files).
    out: PathBuf,
}

impl Args {
    /// The record mix asked for, if any.
    fn mix(&self) -> Option<CardMix> {
        (self.hangul.is_some() || self.cancels.is_some()).then(|| CardMix {
            hangul_percent: self.hangul.unwrap_or(33),
            cancel_percent: self.cancels.unwrap_or(6),
        })
    }

    fn record(&self, i: u64, day: NaiveDate) -> CardRecord {
        match self.mix() {
            Some(mix) => CardRecord::synthetic_mix(i, day, mix),
            None => CardRecord::synthetic(i, day),
        }
    }
}

/// Many small distinct files for intake benchmarks.
fn write_many(args: &Args, count: u64, records: u64, le: LineEnding) -> std::io::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    for k in 0..count {
        // File sequence numbers have four digits: move to the next day every 9 999 files.
        let date = args.date + chrono::Days::new(k / 9999);
        let mut f = CardFile::new(date);
        f.file_seq = (k % 9999 + 1) as u16;
        f.line_ending = le;
        f.records = (0..records)
            .map(|i| args.record(k * records + i, date))
            .collect();
        std::fs::write(args.out.join(f.file_name()), f.render())?;
    }
    Ok(())
}

/// Run the verifier over the generated file and write each entry as a CSV row.
fn write_entries_csv(data: &std::path::Path, out: &std::path::Path) -> Result<u64, String> {
    use std::ops::ControlFlow;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("formats");
    let formats = settlegate::format::FormatRegistry::load_dir(&dir).map_err(|e| e.to_string())?;
    let spec = formats
        .get("card-settlement")
        .ok_or("card-settlement format missing")?;
    let file = std::fs::File::open(data).map_err(|e| e.to_string())?;
    let mut w = csv::Writer::from_path(out).map_err(|e| e.to_string())?;
    let mut failed = None;
    let mut sink = |r: &settlegate::format::DataRecord<'_>| {
        let row = [
            r.number.to_string(),
            r.record_key.to_string(),
            r.amount.to_string(),
            r.fields_json(),
        ];
        match w.write_record(&row) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e.to_string());
                ControlFlow::Break(())
            }
        }
    };
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ctx = settlegate::format::FileContext {
        name: &name,
        sidecar: None,
    };
    let facts = settlegate::format::verify(spec, std::io::BufReader::new(file), ctx, &mut sink)
        .map_err(|e| e.to_string())?;
    if let Some(e) = failed.or(facts.error.map(|e| e.to_string())) {
        return Err(e);
    }
    w.flush().map_err(|e| e.to_string())?;
    Ok(facts.records)
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("", 1),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))?;
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.format != "card-settlement" {
        eprintln!("settlegate-generate: only card-settlement is supported");
        return ExitCode::from(2);
    }
    let le = if args.lf {
        LineEnding::Lf
    } else {
        LineEnding::CrLf
    };
    let per = if args.lf { 201 } else { 202 };
    let n = match (args.records, args.size.as_deref().map(parse_size)) {
        (Some(n), None) => n,
        (None, Some(Some(bytes))) => (bytes / per).saturating_sub(2),
        _ => {
            eprintln!("settlegate-generate: give either --records N or --size SIZE (e.g. 1GiB)");
            return ExitCode::from(2);
        }
    };
    if let Some(count) = args.files {
        let records = args.records.unwrap_or(3);
        return match write_many(&args, count, records, le) {
            Ok(()) => {
                println!("{}: {count} files of {records} records", args.out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("settlegate-generate: {}: {e}", args.out.display());
                ExitCode::FAILURE
            }
        };
    }
    let mut file = CardFile::new(args.date);
    file.line_ending = le;
    let result = std::fs::File::create(&args.out).and_then(|f| {
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let totals = match args.mix() {
            Some(mix) => file.write_synthetic_mix(n, &mut w, mix)?,
            None => file.write_synthetic(n, &mut w)?,
        };
        w.flush()?;
        Ok(totals)
    });
    match result {
        Ok(t) => {
            println!(
                "{}: {} records, total_settle {}",
                args.out.display(),
                t.count,
                t.settle
            );
            if let Some(csv) = &args.entries_csv {
                match write_entries_csv(&args.out, csv) {
                    Ok(n) => println!("{}: {n} entries", csv.display()),
                    Err(e) => {
                        eprintln!("settlegate-generate: {}: {e}", csv.display());
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("settlegate-generate: {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}

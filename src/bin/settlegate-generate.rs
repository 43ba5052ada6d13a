//! Writes valid files of any size for benchmarks and load tests:
//! `settlegate-generate card-settlement --records 5000000 OUT`.
//! Streams with constant memory.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::Parser;
use settlegate::format::generate::{CardFile, LineEnding};

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
    /// Output path.
    out: PathBuf,
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
    let mut file = CardFile::new(args.date);
    file.line_ending = le;
    let result = std::fs::File::create(&args.out).and_then(|f| {
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let totals = file.write_synthetic(n, &mut w)?;
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("settlegate-generate: {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}

//! Human-readable tables for the operator CLI.

use std::fmt::Write;

use clap::ValueEnum;

use origin_router::document::RankingDocument;
use origin_router::sample::{Outcome, Sample, UnixMillis};

/// How a command prints what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The error of an operator command, printed as `error: ...`.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// Formats a duration in ms with sensible precision.
fn ms(d: std::time::Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// One line per sample: every phase, or the failure class.
pub fn samples_table(samples: &[Sample]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:>9} {:>9} {:>9} {:>11} {:>9}  result",
        "pool", "origin", "dns ms", "conn ms", "tls ms", "1st byte ms", "total ms"
    );
    for s in samples {
        match &s.outcome {
            Outcome::Ok(t) => {
                let _ = writeln!(
                    out,
                    "{:<12} {:<14} {:>9} {:>9} {:>9} {:>11} {:>9}  ok",
                    s.pool,
                    s.origin,
                    ms(t.dns),
                    ms(t.connect),
                    ms(t.tls),
                    ms(t.first_byte),
                    ms(t.total)
                );
            }
            Outcome::Failed(f) => {
                let _ = writeln!(
                    out,
                    "{:<12} {:<14} {:>9} {:>9} {:>9} {:>11} {:>9}  {} after {} ms: {}",
                    s.pool,
                    s.origin,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    f.class,
                    ms(f.after),
                    f.detail
                );
            }
        }
    }
    out
}

/// A ranking with its age and every origin's state and numbers.
pub fn ranking_table(doc: &RankingDocument, now: UnixMillis) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pool {}  region {}  seq {}  age {}  workers {}",
        doc.pool,
        doc.region,
        doc.seq,
        match doc.age_ms(now) {
            Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
            None => "FROM THE FUTURE (a runaway clock; edges ignore it)".to_string(),
        },
        doc.workers
    );
    let _ = writeln!(
        out,
        "  {:>4} {:<14} {:<9} {:>10} {:>9} {:>8} {:>7}  last failure",
        "rank", "origin", "state", "latency ms", "score", "success", "votes"
    );
    for (i, o) in doc.origins.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>4} {:<14} {:<9} {:>10} {:>9} {:>7.0}% {:>7}  {}",
            i + 1,
            o.id,
            o.state.as_str(),
            o.latency_ms
                .map(|l| format!("{l:.2}"))
                .unwrap_or_else(|| "-".into()),
            o.score
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into()),
            o.success_ratio * 100.0,
            format!("{}/{}", o.voters - o.down_votes, o.voters),
            o.last_failure.map(|f| f.to_string()).unwrap_or_default()
        );
    }
    out
}

/// A Unix-ms time as RFC 3339 UTC, to the second.
pub fn utc(ms: UnixMillis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

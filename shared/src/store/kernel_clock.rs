//! The kernel's wall clock, read from two procfs files, for the embedded
//! store's [`RankingStore::clock`](super::RankingStore::clock).
//!
//! `btime` in `/proc/stat` is the moment of boot on the kernel's wall clock
//! (computed at each read as CLOCK_REALTIME minus CLOCK_BOOTTIME, whole
//! seconds, truncated), and the first field of `/proc/uptime` is
//! CLOCK_BOOTTIME now (hundredths of a second, truncated): their sum is the
//! kernel's CLOCK_REALTIME now, to within 1.01 s. Both are plain file
//! reads, which a process-level time fake such as libfaketime (an
//! `LD_PRELOAD` library replacing `clock_gettime`, `time`, `stat`, ...)
//! leaves alone whatever its settings; see the embedded store's docs for
//! what was checked and what this reading can and cannot tell.
//!
//! Inside a time namespace (time_namespaces(7)) both files are shown
//! relative to the namespace's boot time, so the sum is still the wall
//! clock, which no namespace can offset.

use std::io::Read;
use std::time::{Duration, Instant};

use super::{StoreClock, StoreError};
use crate::sample::{unix_millis_now, UnixMillis};

const STAT: &str = "/proc/stat";
const UPTIME: &str = "/proc/uptime";

/// `/proc/stat` lists a line per CPU and one with every interrupt's count
/// before `btime`; it is read up to this much.
const MAX_STAT_BYTES: u64 = 4 << 20;

/// btime's whole second plus uptime's hundredth.
pub(super) const RESOLUTION: Duration = Duration::from_millis(1_010);

/// One reading of the kernel's wall clock against this process's.
pub(super) fn read() -> Result<StoreClock, StoreError> {
    let started_ms = unix_millis_now();
    let started = Instant::now();
    let uptime = read_proc(UPTIME, 4096)?;
    let stat = read_proc(STAT, MAX_STAT_BYTES)?;
    let rtt = started.elapsed();
    let uptime_ms = parse_uptime(&uptime).map_err(|why| invalid(UPTIME, why))?;
    let btime = parse_btime(&stat).map_err(|why| invalid(STAT, why))?;
    let server_ms = kernel_now_ms(btime, uptime_ms).ok_or_else(|| {
        invalid(
            STAT,
            format!("btime {btime} s + uptime {uptime_ms} ms is out of range"),
        )
    })?;
    Ok(StoreClock::midpoint(started_ms, rtt, server_ms, RESOLUTION))
}

/// The kernel's wall clock from `btime` (s) and uptime (ms): both are
/// truncated, so the true time is in `[sum, sum + 1.01 s)`; its middle.
fn kernel_now_ms(btime: u64, uptime_ms: u64) -> Option<UnixMillis> {
    btime
        .checked_mul(1000)?
        .checked_add(uptime_ms)?
        .checked_add(RESOLUTION.as_millis() as u64 / 2)
}

fn read_proc(path: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_string(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

fn invalid(path: &str, why: String) -> StoreError {
    StoreError::Io {
        path: path.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
    }
}

/// At most this many bytes of odd content are quoted in an error.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        .chars()
        .flat_map(char::escape_debug)
        .collect()
}

/// The boot time (Unix s) from `/proc/stat`'s `btime N` line.
fn parse_btime(stat: &[u8]) -> Result<u64, String> {
    let line = stat
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"btime "))
        .ok_or("no `btime` line")?;
    let digits = trim_ascii(line);
    match parse_digits(digits) {
        Some(btime) if btime > 0 => Ok(btime),
        _ => Err(format!("btime \"{}\" is not a boot time", shown(line))),
    }
}

/// CLOCK_BOOTTIME (ms) from `/proc/uptime`'s first field, `SECS.HH`.
fn parse_uptime(uptime: &[u8]) -> Result<u64, String> {
    let field = trim_ascii(uptime)
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    let bad = || format!("uptime \"{}\" is not SECONDS.FRACTION", shown(uptime));
    let (secs, fraction) = match field.iter().position(|&b| b == b'.') {
        Some(dot) => (&field[..dot], &field[dot + 1..]),
        None => (field, &b""[..]),
    };
    let secs = parse_digits(secs).ok_or_else(bad)?;
    if fraction.len() > 9 || !fraction.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // Milliseconds: the fraction's first three digits, padded.
    let ms = fraction
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0u64, |ms, d| ms * 10 + u64::from(d - b'0'));
    secs.checked_mul(1000)
        .and_then(|s| s.checked_add(ms))
        .ok_or_else(bad)
}

/// A decimal of 1 to 18 ASCII digits (no sign, no overflow).
fn parse_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btime_is_read_from_its_line() {
        let stat = b"cpu  10 0 5 100 0 0 0 0 0 0\ncpu0 10 0 5 100 0 0 0 0 0 0\nintr 12345 0 1 2\nctxt 99\nbtime 1700000000\nprocesses 42\n";
        assert_eq!(parse_btime(stat), Ok(1_700_000_000));
        assert_eq!(parse_btime(b"btime 1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_btime(b"btime  1700000000 \r\n"), Ok(1_700_000_000));
    }

    #[test]
    fn odd_stat_content_is_an_error_never_a_panic() {
        for (stat, expected) in [
            (&b""[..], "no `btime` line"),
            (b"cpu 1 2 3\n", "no `btime` line"),
            (b"xbtime 17\n", "no `btime` line"),
            (b"btime \n", "not a boot time"),
            (b"btime 0\n", "not a boot time"),
            (b"btime -5\n", "not a boot time"),
            (b"btime 17e9\n", "not a boot time"),
            (b"btime 99999999999999999999999\n", "not a boot time"),
            (b"btime \xff\xfe\n", "not a boot time"),
        ] {
            let e = parse_btime(stat).unwrap_err();
            assert!(e.contains(expected), "{stat:?}: {e}");
        }
        let long = [b"btime ".as_slice(), &[b'x'; 10_000]].concat();
        assert!(parse_btime(&long).unwrap_err().len() < 200);
    }

    #[test]
    fn uptime_is_read_to_the_millisecond() {
        assert_eq!(parse_uptime(b"3008.23 1331.03\n"), Ok(3_008_230));
        assert_eq!(parse_uptime(b"0.5 0.1"), Ok(500));
        assert_eq!(parse_uptime(b"12"), Ok(12_000));
        assert_eq!(parse_uptime(b"12.123456789 1"), Ok(12_123));
        assert_eq!(parse_uptime(b"  7.01\t3.00"), Ok(7_010));
    }

    #[test]
    fn odd_uptime_content_is_an_error_never_a_panic() {
        for uptime in [
            &b""[..],
            b"\n",
            b".5 1",
            b"-3.00 1",
            b"3.-1 1",
            b"3.1234567890 1",
            b"1e3 1",
            b"9999999999999999999.00",
            b"3,00 1",
            b"\xff.\xff",
        ] {
            let e = parse_uptime(uptime).unwrap_err();
            assert!(e.contains("is not SECONDS.FRACTION"), "{uptime:?}: {e}");
        }
    }

    #[test]
    fn the_kernel_time_is_the_middle_of_both_truncations() {
        assert_eq!(
            kernel_now_ms(1_700_000_000, 3_008_230),
            Some(1_700_003_008_735)
        );
        assert_eq!(kernel_now_ms(u64::MAX / 10, 0), None);
        assert_eq!(kernel_now_ms(1, u64::MAX), None);
    }

    /// On this machine's own clock, the reading agrees with this process
    /// to within its uncertainty.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_kernel_agrees_with_this_process() {
        let clock = read().unwrap();
        assert_eq!(clock.resolution, RESOLUTION);
        let slack = clock.uncertainty() + Duration::from_millis(20);
        assert!(
            clock.offset_ms().unsigned_abs() as u128 <= slack.as_millis(),
            "{clock:?}"
        );
    }
}

//! The validator every section reports to, and the name rules shared by
//! the config and everything that turns names into file names, Redis keys
//! and metric labels.

use std::time::Duration;

use super::Problem;

/// A duration as the config file writes it (`1m 30s`, `250ms`).
pub(crate) fn fmt_duration(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

/// Accumulates problems with their field paths, so one run of
/// `check-config` lists every problem at once.
#[derive(Default)]
pub(crate) struct Validator {
    pub(crate) problems: Vec<Problem>,
}

impl Validator {
    pub(crate) fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Checks `min <= d <= max` (both inclusive); the message names the
    /// value and the documented range, e.g. `500000000000years is not
    /// within [1ms, 25s]`. Returns whether `d` is in range. Comparisons
    /// only: no arithmetic on `d`, so no value can overflow here.
    pub(crate) fn duration(
        &mut self,
        path: &str,
        d: Duration,
        min: Duration,
        max: Duration,
    ) -> bool {
        let ok = (min..=max).contains(&d);
        if !ok {
            self.fail(
                path,
                format!(
                    "{} is not within [{}, {}]",
                    fmt_duration(d),
                    fmt_duration(min),
                    fmt_duration(max)
                ),
            );
        }
        ok
    }

    /// Names (pools, origin ids, regions, workers) become file names, Redis
    /// keys and metric labels, so they are kept to a safe alphabet.
    pub(crate) fn name(&mut self, path: &str, name: &str) {
        if !is_name(name) {
            self.fail(
                path,
                format!(
                    "`{name}` is not a valid name (1-64 of A-Z a-z 0-9 _ . -, not starting with .)"
                ),
            );
        }
    }
}

/// Pool, origin, region and worker names: 1-64 of `[A-Za-z0-9_.-]`, not
/// starting with a dot (they become file names and Redis keys).
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A DNS host name: dot-separated labels of 1-63 letters, digits, `-` or
/// `_`, 253 characters at most.
pub fn is_host_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        })
}

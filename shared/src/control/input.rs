//! What an operator asks for with `prober drain` / `prober override`,
//! checked against the configuration before anything is stored.
//!
//! These are the CLI's checks, kept in the library so that the tests of
//! every reader (the edge's decision, the prober's ranking) apply exactly
//! them: a control that passes [`controls`] is one every reader honours.
//! A typo is an error naming the bad value (and, for a region, the name
//! meant), never a control that applies nowhere.

use crate::config::{is_name, Config};
use crate::geo;
use crate::sample::UnixMillis;

use super::{check_text, parse_duration, Control, ControlError, ControlKind, ALL_REGIONS};

/// One `drain` or `override` as typed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub kind: ControlKind,
    pub pool: &'a str,
    pub origin: &'a str,
    /// The `--region` values; empty: every region ([`ALL_REGIONS`]).
    pub regions: &'a [String],
    /// `--for`, in the config's duration grammar.
    pub duration: &'a str,
    pub reason: &'a str,
    pub by: &'a str,
}

/// Why a request is refused; each message names the flag or value at
/// fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("unknown pool `{pool}` (the config has: {known})")]
    UnknownPool { pool: String, known: String },
    #[error("unknown origin `{origin}` in pool `{pool}` (it has: {known})")]
    UnknownOrigin {
        pool: String,
        origin: String,
        known: String,
    },
    #[error("--for: {0}")]
    Duration(String),
    #[error("{0}")]
    Region(String),
    /// `--reason` or `--by` (the error's message starts with the field).
    #[error("--{0}")]
    Text(ControlError),
    #[error("{0}")]
    Control(ControlError),
}

/// Checks that `pool` and `origin` are in the config.
pub fn check_target(config: &Config, pool: &str, origin: &str) -> Result<(), InputError> {
    let Some(p) = config.pools.get(pool) else {
        let known: Vec<&str> = config.pools.keys().map(String::as_str).collect();
        return Err(InputError::UnknownPool {
            pool: pool.to_string(),
            known: known.join(", "),
        });
    };
    if p.origin(origin).is_none() {
        let known: Vec<&str> = p.origins.iter().map(|o| o.id.as_str()).collect();
        return Err(InputError::UnknownOrigin {
            pool: pool.to_string(),
            origin: origin.to_string(),
            known: known.join(", "),
        });
    }
    Ok(())
}

/// The regions a control may name: every region the geography knows
/// ([`geo::REGIONS`]) and those of `store.table_regions` (a replica the
/// geography does not know yet).
pub fn known_regions(config: &Config) -> Vec<&str> {
    let mut known: Vec<&str> = geo::REGIONS.iter().map(|r| r.0).collect();
    for r in &config.store.table_regions {
        if !known.contains(&r.as_str()) {
            known.push(r);
        }
    }
    known
}

/// Checks one `--region`: a name the geography or `store.table_regions`
/// knows, where an edge or prober can run and read the control. A typo
/// is refused with the nearest known name.
pub fn check_region(config: &Config, region: &str) -> Result<(), InputError> {
    if !is_name(region) || region == ALL_REGIONS {
        return Err(InputError::Region(format!(
            "--region `{}` is not a valid region name{}",
            region.chars().take(64).collect::<String>(),
            if region == ALL_REGIONS {
                " (use --all-regions, or no --region, for every region)"
            } else {
                ""
            }
        )));
    }
    let known = known_regions(config);
    if known.contains(&region) {
        return Ok(());
    }
    Err(InputError::Region(
        match geo::nearest_name(region, known.iter().copied()) {
            Some(meant) => {
                format!("--region: unknown region `{region}`; did you mean `{meant}`?")
            }
            None => format!(
                "--region: unknown region `{region}`: not an AWS region Origin Router knows \
                 ({}) nor one of store.table_regions; --all-regions (or no --region) applies \
                 in every region",
                known.join(", ")
            ),
        },
    ))
}

/// The regions of a request: those named, or [`ALL_REGIONS`] when none is.
pub fn regions(config: &Config, named: &[String]) -> Result<Vec<String>, InputError> {
    if named.is_empty() {
        return Ok(vec![ALL_REGIONS.to_string()]);
    }
    for r in named {
        check_region(config, r)?;
    }
    let mut out: Vec<String> = Vec::new();
    for r in named {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    Ok(out)
}

/// The controls `request` sets at `now` (one per region), or why it is
/// refused: pool and origin of the config, `--for` in the config's
/// grammar within the configured maximum, known regions, and texts
/// [`check_text`] accepts; each control then passes
/// [`Control::validate`], so it fits [`super::MAX_CONTROL_BYTES`].
pub fn controls(
    config: &Config,
    request: &Request<'_>,
    now: UnixMillis,
) -> Result<Vec<Control>, InputError> {
    check_target(config, request.pool, request.origin)?;
    let kind = request.kind;
    let lasts = parse_duration(request.duration, kind, kind.configured_max(config))
        .map_err(InputError::Duration)?;
    let regions = regions(config, request.regions)?;
    check_text("reason", request.reason).map_err(InputError::Text)?;
    check_text("by", request.by).map_err(InputError::Text)?;
    let until = now
        .checked_add(u64::try_from(lasts.as_millis()).unwrap_or(u64::MAX))
        .ok_or_else(|| InputError::Duration(format!("`{}` ends too late", request.duration)))?;
    regions
        .into_iter()
        .map(|region| {
            let c = Control {
                kind,
                pool: request.pool.to_string(),
                region,
                origin: request.origin.to_string(),
                set_at: now,
                until,
                by: request.by.to_string(),
                reason: request.reason.to_string(),
            };
            c.validate().map_err(|e| match e.field() {
                Some("by" | "reason") => InputError::Text(e),
                _ => InputError::Control(e),
            })?;
            Ok(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{MAX_BY_BYTES, MAX_CONTROL_BYTES, MAX_REASON_BYTES};
    use std::time::Duration;

    fn config(extra: &str) -> Config {
        Config::from_toml(
            &format!(
                r#"
                [pools.web]
                origins = [{{ id = "a", host = "127.0.0.1" }}, {{ id = "b", host = "127.0.0.2" }}]
                {extra}
                "#
            ),
            "test",
        )
        .unwrap()
    }

    fn request<'a>(regions: &'a [String], duration: &'a str, reason: &'a str) -> Request<'a> {
        Request {
            kind: ControlKind::Drain,
            pool: "web",
            origin: "a",
            regions,
            duration,
            reason,
            by: "alice",
        }
    }

    const NOW: UnixMillis = 1_700_000_000_000;

    fn refused(config: &Config, r: &Request<'_>) -> String {
        controls(config, r, NOW).unwrap_err().to_string()
    }

    #[test]
    fn the_audits_512_emoji_are_refused_naming_the_field_and_its_bytes() {
        let c = config("");
        let emoji = "😀".repeat(512);
        let mut r = request(&[], "1h", &emoji);
        assert_eq!(
            refused(&c, &r),
            "--reason is 2,048 bytes (512 characters); a control's reason may take at most \
             1,024 bytes of UTF-8"
        );
        r.reason = "R";
        r.by = &emoji;
        assert_eq!(
            refused(&c, &r),
            "--by is 2,048 bytes (512 characters); a control's by may take at most 512 bytes \
             of UTF-8"
        );
        // At the edge: exactly the limit is taken, one byte more is not.
        let reason = "😀".repeat(MAX_REASON_BYTES / 4);
        let by = "é".repeat(MAX_BY_BYTES / 2);
        r.reason = &reason;
        r.by = &by;
        let set = controls(&c, &r, NOW).unwrap();
        assert!(set[0].to_json().len() <= MAX_CONTROL_BYTES);
        let reason = format!("{reason}x");
        r.reason = &reason;
        assert!(refused(&c, &r).contains("1,025 bytes"));
    }

    #[test]
    fn control_and_bidirectional_characters_are_refused() {
        let c = config("");
        for (text, code) in [
            (
                "fix \u{202E}gnp.exe",
                "U+202E (a bidirectional override) at character 5",
            ),
            (
                "\u{2066}x",
                "U+2066 (a bidirectional isolate) at character 1",
            ),
            ("a\u{200F}", "U+200F (a bidirectional mark)"),
            ("a\u{1b}[31m", "U+001B (a control character)"),
            ("a\nb", "U+000A"),
            ("a\u{85}", "U+0085"),
            ("a\u{2028}", "U+2028 (a line separator)"),
        ] {
            let err = refused(&c, &request(&[], "1h", text));
            assert!(err.starts_with("--reason holds "), "{err}");
            assert!(err.contains(code), "{text:?}: {err}");
        }
        // A joiner inside an emoji sequence and right-to-left script are text.
        controls(&c, &request(&[], "1h", "👩‍🔧 صيانة"), NOW).unwrap();
        let mut r = request(&[], "1h", "r");
        r.by = "ops\u{202D}";
        assert!(refused(&c, &r).starts_with("--by holds U+202D"));
    }

    #[test]
    fn regions_must_be_known_and_a_typo_names_the_region_meant() {
        let c = config("[store]\ntable_regions = [\"zz-lab-1\"]");
        let one = |r: &str| vec![r.to_string()];
        for region in geo::REGIONS.iter().map(|r| r.0).chain(["zz-lab-1"]) {
            let regions = one(region);
            let set = controls(&c, &request(&regions, "1h", "r"), NOW).unwrap();
            assert_eq!(set[0].region, region);
        }
        assert_eq!(
            refused(&c, &request(&one("eu-west1"), "1h", "r")),
            "--region: unknown region `eu-west1`; did you mean `eu-west-1`?"
        );
        assert_eq!(
            refused(&c, &request(&one("zz-lab1"), "1h", "r")),
            "--region: unknown region `zz-lab1`; did you mean `zz-lab-1`?"
        );
        let err = refused(&c, &request(&one("mars-1"), "1h", "r"));
        assert!(
            err.starts_with("--region: unknown region `mars-1`: not an AWS region")
                && err.contains("eu-west-1")
                && err.contains("--all-regions"),
            "{err}"
        );
        assert!(refused(&c, &request(&one("../x"), "1h", "r")).contains("--region `../x`"));
        assert!(refused(&c, &request(&one(ALL_REGIONS), "1h", "r")).contains("--all-regions"));
        let set = controls(&c, &request(&[], "1h", "r"), NOW).unwrap();
        assert_eq!(set[0].region, ALL_REGIONS);
    }

    #[test]
    fn for_takes_the_configs_duration_grammar() {
        let c = config("");
        let lasts = |d: &str| {
            let set = controls(&c, &request(&[], d, "r"), NOW).unwrap();
            Duration::from_millis(set[0].until - set[0].set_at)
        };
        assert_eq!(lasts("7days"), Duration::from_secs(7 * 86_400));
        assert_eq!(lasts("90m"), Duration::from_secs(5_400));
        assert_eq!(lasts("1h 30m"), Duration::from_secs(5_400));
        assert_eq!(lasts("1d"), Duration::from_secs(86_400));
        assert_eq!(lasts("2h"), Duration::from_secs(7_200));
        // Each is what the config reads for the same text.
        for d in ["7days", "90m", "1h 30m", "1d", "36h", "1week"] {
            let read = config(&format!("[operations]\nmax_drain = \"{d}\""));
            assert_eq!(lasts(d), read.operations.max_drain, "{d}");
        }
        // 8days: beyond the default maximum, and taken under a wider one.
        let err = refused(&c, &request(&[], "8days", "r"));
        assert!(
            err.starts_with("--for: duration `8days` is longer than the 7days maximum")
                && err.contains("operations.max_drain"),
            "{err}"
        );
        let wide = config("[operations]\nmax_drain = \"30days\"");
        let set = controls(&wide, &request(&[], "8days", "r"), NOW).unwrap();
        assert_eq!(set[0].until - set[0].set_at, 8 * 86_400_000);
        let err = refused(&c, &request(&[], "8dayz", "r"));
        assert!(err.contains("`8dayz` is not a duration"), "{err}");
        assert!(refused(&c, &request(&[], "-5m", "r")).contains("negative"));
        assert!(refused(&c, &request(&[], "0s", "r")).contains("zero"));
    }
}

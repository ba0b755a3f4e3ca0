//! AWS region geography: where each region is, and from that the order in
//! which an edge in one region should try other regions' rankings when its
//! own is missing or stale. Configurable per region (`edge.proximity`).

use std::collections::BTreeMap;

/// Known regions with the approximate latitude and longitude of their
/// metro area.
pub const REGIONS: &[(&str, f64, f64)] = &[
    ("us-east-1", 38.9, -77.4),
    ("us-east-2", 40.0, -83.0),
    ("us-west-1", 37.4, -121.9),
    ("us-west-2", 45.8, -119.7),
    ("ca-central-1", 45.5, -73.6),
    ("ca-west-1", 51.0, -114.1),
    ("mx-central-1", 20.6, -100.4),
    ("sa-east-1", -23.5, -46.6),
    ("eu-west-1", 53.3, -6.3),
    ("eu-west-2", 51.5, -0.1),
    ("eu-west-3", 48.9, 2.35),
    ("eu-central-1", 50.1, 8.7),
    ("eu-central-2", 47.4, 8.5),
    ("eu-north-1", 59.3, 18.1),
    ("eu-south-1", 45.5, 9.2),
    ("eu-south-2", 41.6, -0.9),
    ("il-central-1", 32.1, 34.8),
    ("me-south-1", 26.1, 50.6),
    ("me-central-1", 24.5, 54.4),
    ("af-south-1", -33.9, 18.4),
    ("ap-south-1", 19.1, 72.9),
    ("ap-south-2", 17.4, 78.5),
    ("ap-east-1", 22.3, 114.2),
    ("ap-east-2", 25.0, 121.5),
    ("ap-southeast-1", 1.35, 103.8),
    ("ap-southeast-2", -33.9, 151.2),
    ("ap-southeast-3", -6.2, 106.8),
    ("ap-southeast-4", -37.8, 145.0),
    ("ap-southeast-5", 3.1, 101.7),
    ("ap-southeast-7", 13.75, 100.5),
    ("ap-northeast-1", 35.7, 139.7),
    ("ap-northeast-2", 37.6, 127.0),
    ("ap-northeast-3", 34.7, 135.5),
];

fn location(region: &str) -> Option<(f64, f64)> {
    REGIONS
        .iter()
        .find(|(r, _, _)| *r == region)
        .map(|(_, lat, lon)| (*lat, *lon))
}

/// Whether the geography knows `region` (one of [`REGIONS`]).
pub fn is_known(region: &str) -> bool {
    location(region).is_some()
}

/// The number of single-character insertions, deletions and substitutions
/// that turn `a` into `b` (Levenshtein), for "did you mean" hints on a
/// mistyped name. Names are short, so the quadratic time is nothing.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The candidate nearest to `name` by [`edit_distance`], if it is close
/// enough to be a typo of it (at most 3 edits and fewer than half the
/// name's length): `eu-west1` gives `eu-west-1`, `mars-1` gives nothing.
/// Ties go to the first candidate.
pub fn nearest_name<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let reach = (name.chars().count().div_ceil(2)).saturating_sub(1).min(3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= reach)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Great-circle distance in km.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1, lat2, lon2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// Orders `candidates` nearest first as seen from `from`: the region itself,
/// then an explicit override list if configured, then the rest by distance;
/// regions of unknown location come last, by name.
pub fn nearest_first<'a>(
    from: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    overrides: &BTreeMap<String, Vec<String>>,
) -> Vec<&'a str> {
    let origin = location(from);
    let preferred = overrides.get(from);
    let mut keyed: Vec<(u8, f64, &'a str)> = candidates
        .into_iter()
        .map(|c| {
            if c == from {
                return (0, 0.0, c);
            }
            if let Some(pos) = preferred.and_then(|list| list.iter().position(|r| r == c)) {
                return (1, pos as f64, c);
            }
            match (origin, location(c)) {
                (Some(a), Some(b)) => (2, distance_km(a, b), c),
                _ => (3, 0.0, c),
            }
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(b.2)));
    keyed.dedup_by(|a, b| a.2 == b.2);
    keyed.into_iter().map(|(_, _, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_regions_come_first() {
        let all: Vec<&str> = REGIONS.iter().map(|r| r.0).collect();
        let order = nearest_first("eu-west-1", all.iter().copied(), &BTreeMap::new());
        assert_eq!(order[0], "eu-west-1");
        assert_eq!(order[1], "eu-west-2");
        assert_eq!(order.len(), REGIONS.len());
        let pos = |r| order.iter().position(|x| *x == r).unwrap();
        assert!(pos("eu-central-1") < pos("us-east-1"));
        assert!(pos("us-east-1") < pos("ap-southeast-2"));
        let order = nearest_first(
            "ap-northeast-1",
            ["us-west-2", "eu-west-1", "ap-northeast-3"],
            &BTreeMap::new(),
        );
        assert_eq!(order, ["ap-northeast-3", "us-west-2", "eu-west-1"]);
    }

    #[test]
    fn overrides_and_unknown_regions() {
        let mut o = BTreeMap::new();
        o.insert("us-east-1".to_string(), vec!["eu-west-1".to_string()]);
        let order = nearest_first(
            "us-east-1",
            ["zz-lab-1", "us-east-2", "eu-west-1", "us-east-1"],
            &o,
        );
        assert_eq!(order, ["us-east-1", "eu-west-1", "us-east-2", "zz-lab-1"]);
        let order = nearest_first("nowhere", ["b", "a"], &BTreeMap::new());
        assert_eq!(order, ["a", "b"]);
    }

    #[test]
    fn typos_find_the_region_meant_and_nonsense_finds_none() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("eu-west1", "eu-west-1"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ü", "u"), 1);
        let all = || REGIONS.iter().map(|r| r.0);
        assert_eq!(nearest_name("eu-west1", all()), Some("eu-west-1"));
        assert_eq!(nearest_name("us-est-1", all()), Some("us-east-1"));
        assert_eq!(nearest_name("eu-wset-1", all()), Some("eu-west-1"));
        assert_eq!(nearest_name("mars-1", all()), None);
        assert_eq!(nearest_name("x", all()), None);
        assert!(is_known("eu-west-1") && !is_known("eu-west1"));
    }

    #[test]
    fn distance_is_plausible() {
        let d = distance_km(
            location("us-east-1").unwrap(),
            location("eu-west-1").unwrap(),
        );
        assert!((5000.0..6000.0).contains(&d), "{d}");
    }
}

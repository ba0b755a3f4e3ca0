//! The set of origins a decision may choose from, folded once from the
//! pool's configuration, the operators' controls and this container's
//! ejections (as pingora builds its selection before it balances).
//!
//! A pool has at most [`MAX_ORIGINS`] (64) origins, so a set is one `u64`
//! over the pool's config order: folding, testing and iterating cost no
//! allocation and never clone a `PoolConfig`.

use origin_router::config::{OriginConfig, PoolConfig, MAX_ORIGINS};

// One bit per origin: a pool may never hold more.
const _: () = assert!(MAX_ORIGINS <= 64);

/// A subset of one pool's origins, by their index in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OriginSet(u64);

impl OriginSet {
    /// Every origin of `pool`.
    pub fn all(pool: &PoolConfig) -> OriginSet {
        let n = pool.origins.len().min(MAX_ORIGINS);
        OriginSet(if n == 64 { u64::MAX } else { (1u64 << n) - 1 })
    }

    /// The origins of `pool` whose ids are in `ids` (unknown ids are
    /// ignored).
    pub fn of<'a>(pool: &PoolConfig, ids: impl IntoIterator<Item = &'a str>) -> OriginSet {
        let mut set = OriginSet::default();
        for id in ids {
            if let Some(i) = index(pool, id) {
                set.0 |= 1 << i;
            }
        }
        set
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains_index(self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }

    /// Whether origin `id` of `pool` is in the set.
    pub fn contains(self, pool: &PoolConfig, id: &str) -> bool {
        index(pool, id).is_some_and(|i| self.contains_index(i))
    }

    pub fn without(self, other: OriginSet) -> OriginSet {
        OriginSet(self.0 & !other.0)
    }

    /// The set's origins in config order.
    pub fn origins(self, pool: &PoolConfig) -> impl Iterator<Item = &OriginConfig> {
        pool.origins
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.contains_index(*i))
            .map(|(_, o)| o)
    }

    /// The set's default: the pool's default origin when it is in the set,
    /// else the set's first origin in config order; the pool's default when
    /// the set is empty (never happens in a decision: it never folds to an
    /// empty set).
    pub fn default_origin(self, pool: &PoolConfig) -> &OriginConfig {
        let configured = pool.default_origin_id();
        self.origins(pool)
            .find(|o| o.id == configured)
            .or_else(|| self.origins(pool).next())
            .or_else(|| pool.origin(configured))
            .unwrap_or(&pool.origins[0])
    }
}

/// Where `id` is in the pool's config order.
fn index(pool: &PoolConfig, id: &str) -> Option<usize> {
    pool.origins
        .iter()
        .take(MAX_ORIGINS)
        .position(|o| o.id == id)
}

/// The pool as a decision sees it: what the controls and ejections leave,
/// with the fallbacks they allow, in the order the decision tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usable {
    /// The origins no control takes out (every origin when fail-open
    /// ignored the drains).
    pub undrained: OriginSet,
    /// `undrained` without this container's ejections in force; equal to
    /// `undrained` when nothing is ejected or ejecting would leave nothing.
    pub preferred: OriginSet,
    /// Fail-open's last resort: the whole pool, drained origins included,
    /// tried when everything `undrained` is down; `None` when fail-open is
    /// off or nothing is drained.
    pub last_resort: Option<OriginSet>,
}

/// What the controls make of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folded {
    /// Choose within these sets.
    Usable(Usable),
    /// Every origin is drained and `operations.fail_open` is off: the
    /// request goes to the distribution's own origin, unchanged.
    Closed,
}

/// Why fail-open let a drained origin in (for the router's log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOpen {
    /// Every origin was drained: the drains were ignored.
    AllDrained,
    /// Every origin the drains leave is down: a drained one that is up was
    /// chosen.
    DrainedUp,
}

/// Folds `drained` and `ejected` (origin sets of `pool`) into the sets a
/// decision chooses from. Fail-open applies when the drains leave nothing.
pub fn fold(
    pool: &PoolConfig,
    drained: OriginSet,
    ejected: OriginSet,
    fail_open: bool,
) -> (Folded, Option<FailOpen>) {
    let all = OriginSet::all(pool);
    let mut undrained = all.without(drained);
    let mut note = None;
    if undrained.is_empty() {
        if !fail_open {
            return (Folded::Closed, None);
        }
        undrained = all;
        note = Some(FailOpen::AllDrained);
    }
    let unejected = undrained.without(ejected);
    let preferred = if unejected.is_empty() {
        undrained
    } else {
        unejected
    };
    let last_resort = (fail_open && undrained != all).then_some(all);
    (
        Folded::Usable(Usable {
            undrained,
            preferred,
            last_resort,
        }),
        note,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::config::Config;

    fn pool(n: usize) -> PoolConfig {
        let mut text = String::from("[pools.web]\n");
        for i in 0..n {
            text.push_str(&format!(
                "[[pools.web.origins]]\nid = \"o{i}\"\nhost = \"o{i}.example.net\"\n"
            ));
        }
        Config::from_toml(&text, "t.toml").unwrap().pools["web"].clone()
    }

    #[test]
    fn a_set_of_64_origins_holds_them_all() {
        let p = pool(64);
        let all = OriginSet::all(&p);
        assert_eq!(all.origins(&p).count(), 64);
        assert!(all.contains(&p, "o63"));
        let one = OriginSet::of(&p, ["o63", "nope"]);
        assert_eq!(all.without(one).origins(&p).count(), 63);
        assert!(!all.without(one).contains(&p, "o63"));
    }

    #[test]
    fn the_default_moves_to_the_first_origin_left() {
        let p = pool(3);
        let left = OriginSet::all(&p).without(OriginSet::of(&p, ["o0"]));
        assert_eq!(left.default_origin(&p).id, "o1");
        assert_eq!(OriginSet::all(&p).default_origin(&p).id, "o0");
    }

    #[test]
    fn ejections_never_empty_the_set_and_drains_fail_open_or_close() {
        let p = pool(2);
        let all = OriginSet::all(&p);
        let (folded, note) = fold(&p, OriginSet::default(), all, true);
        assert_eq!(note, None);
        let Folded::Usable(u) = folded else { panic!() };
        assert_eq!(u.preferred, all, "ejecting every origin ejects none");
        let (folded, note) = fold(&p, all, OriginSet::default(), true);
        assert_eq!(note, Some(FailOpen::AllDrained));
        assert!(
            matches!(folded, Folded::Usable(u) if u.undrained == all && u.last_resort.is_none())
        );
        assert_eq!(fold(&p, all, OriginSet::default(), false).0, Folded::Closed);
        let one = OriginSet::of(&p, ["o0"]);
        let Folded::Usable(u) = fold(&p, one, OriginSet::default(), true).0 else {
            panic!()
        };
        assert_eq!(u.last_resort, Some(all));
        let Folded::Usable(u) = fold(&p, one, OriginSet::default(), false).0 else {
            panic!()
        };
        assert_eq!(u.last_resort, None);
    }
}

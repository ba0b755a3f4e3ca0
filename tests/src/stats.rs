//! The one percentile rule every benchmark reports with, so two figures
//! called "p99" are always the same statistic.
//!
//! Nearest rank: the p-th percentile of n values is the value at rank
//! `ceil(p * n)` (1-based) of the sorted values, so p100 is the maximum,
//! p50 of an even count is the lower middle value, and every reported
//! figure is a value that was measured (never an interpolation).

/// Sorted measurements, ready for percentiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Percentiles<T> {
    sorted: Vec<T>,
}

impl<T: Copy + PartialOrd> Percentiles<T> {
    /// Sorts `values`; a value not comparable with itself (NaN) is no
    /// measurement and is dropped.
    pub fn new(mut values: Vec<T>) -> Self {
        values.retain(|v| v.partial_cmp(v).is_some());
        values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Percentiles { sorted: values }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The nearest-rank percentile, `p` in `[0, 1]`; `None` when empty.
    pub fn at(&self, p: f64) -> Option<T> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = (p.clamp(0.0, 1.0) * n as f64).ceil() as usize;
        Some(self.sorted[rank.clamp(1, n) - 1])
    }

    pub fn p50(&self) -> Option<T> {
        self.at(0.50)
    }

    pub fn p99(&self) -> Option<T> {
        self.at(0.99)
    }

    pub fn max(&self) -> Option<T> {
        self.sorted.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_small_and_large_counts() {
        let p = Percentiles::new((1..=20u64).rev().collect());
        assert_eq!(p.p50(), Some(10));
        assert_eq!(p.p99(), Some(20), "p99 of 20 values is the maximum");
        assert_eq!(p.at(0.0), Some(1));
        assert_eq!(p.max(), Some(20));
        let p = Percentiles::new((1..=1000u64).collect());
        assert_eq!(p.p50(), Some(500));
        assert_eq!(p.p99(), Some(990));
        assert_eq!(Percentiles::<u64>::new(Vec::new()).p50(), None);
        let p = Percentiles::new(vec![2.5, f64::NAN, 1.5, 3.5]);
        assert_eq!((p.len(), p.p50(), p.max()), (3, Some(2.5), Some(3.5)));
    }
}

//! Rise/fall health as pure state: one counter that counts only results that
//! disagree with the current state (as HAProxy and pingora do). One lost
//! probe does not eject an origin; one lucky probe does not restore it.

/// Up/down state of one origin as one worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    up: bool,
    disagreeing: u32,
}

impl Default for Health {
    /// Origins start up: an origin is innocent until `fall` failures say
    /// otherwise.
    fn default() -> Self {
        Health {
            up: true,
            disagreeing: 0,
        }
    }
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one result; returns true when the state flipped.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok == self.up {
            self.disagreeing = 0;
            return false;
        }
        self.disagreeing += 1;
        let threshold = if self.up { fall } else { rise };
        if self.disagreeing >= threshold.max(1) {
            self.up = ok;
            self.disagreeing = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut h = Health::default();
        assert!(!h.observe(false, 2, 3));
        assert!(!h.observe(false, 2, 3));
        assert!(h.is_up());
        assert!(h.observe(false, 2, 3));
        assert!(!h.is_up());
        assert!(!h.observe(true, 2, 3));
        assert!(!h.is_up());
        assert!(h.observe(true, 2, 3));
        assert!(h.is_up());
    }

    #[test]
    fn an_agreeing_result_resets_the_count() {
        let mut h = Health::default();
        for _ in 0..10 {
            h.observe(false, 2, 3);
            h.observe(false, 2, 3);
            h.observe(true, 2, 3);
        }
        assert!(h.is_up());
    }
}

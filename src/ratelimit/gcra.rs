//! The generic cell rate algorithm over several windows at once, with reservations.
//!
//! A window "`limit` per `per`, bursts of `burst`" has an emission interval `T = per / limit` and a
//! capacity `C = burst * T`. Its state is one number, the theoretical arrival time (TAT). A request at
//! time `t` conforms when `max(TAT, t) + T - t <= C`; the earliest conforming time is therefore
//! `max(now, TAT + T - C)`. A request against several windows is admitted at the latest of their
//! earliest times, and only then does any window change, so a request refused by one window never
//! spends another window's allowance. Admitting "at a later time" is a reservation: the caller waits
//! until then, and reservations made in order are served in order (FIFO per key).
//!
//! All times are nanoseconds on one monotonic clock (the local store) or microseconds of the Redis
//! server clock (the shared store runs the same arithmetic in a Lua script).

/// One window of a limit, in clock units (nanoseconds locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Emission interval `T`: the time one request uses up.
    pub t: u64,
    /// Capacity `C = burst * T`.
    pub c: u64,
}

/// The result of asking for one unit at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted at `at` (`at == now`: at once; later: after waiting).
    Admit {
        /// When the request may go.
        at: u64,
    },
    /// Refused: the earliest conforming time is later than the allowed wait.
    Refuse {
        /// The earliest time a request would conform (for `Retry-After`).
        at: u64,
    },
}

/// The earliest time at or after `now` (and `not_before`) at which a request conforms to every window.
pub fn earliest(cells: &[Cell], tats: &[u64], now: u64, not_before: u64) -> u64 {
    let mut at = now.max(not_before);
    for (cell, tat) in cells.iter().zip(tats) {
        at = at.max((tat + cell.t).saturating_sub(cell.c));
    }
    at
}

/// Reserves one unit if it conforms within `max_wait` of `now`; updates `tats` only when admitted.
/// `tats` shorter than `cells` (a new key, or a limit that gained a window) counts as zero.
pub fn reserve(cells: &[Cell], tats: &mut Vec<u64>, now: u64, not_before: u64, max_wait: u64) -> Verdict {
    tats.resize(cells.len(), 0);
    let at = earliest(cells, tats, now, not_before);
    if at - now > max_wait {
        return Verdict::Refuse { at };
    }
    for (cell, tat) in cells.iter().zip(tats.iter_mut()) {
        *tat = (*tat).max(at) + cell.t;
    }
    Verdict::Admit { at }
}

/// Gives back a reservation made at `at`, if it is still the newest one in every window (so no later
/// reservation was computed from it and FIFO order holds). Returns whether it was given back.
pub fn release(cells: &[Cell], tats: &mut [u64], reserved: &[u64]) -> bool {
    if tats.len() != reserved.len() || tats.iter().zip(reserved).any(|(a, b)| a != b) {
        return false;
    }
    for (cell, tat) in cells.iter().zip(tats.iter_mut()) {
        *tat = tat.saturating_sub(cell.t);
    }
    true
}

/// Requests a window would still admit at once at `now`, and the time until it is full again.
pub fn remaining(cell: Cell, tat: u64, now: u64) -> (u64, u64) {
    let used = tat.saturating_sub(now); // time "owed"
    let left = cell.c.saturating_sub(used) / cell.t.max(1);
    (left, used)
}

/// True when the state is the same as no state: every window is full again.
pub fn idle(tats: &[u64], now: u64) -> bool {
    tats.iter().all(|t| *t <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn per_minute(limit: u64, burst: u64) -> Cell {
        let t = 60 * S / limit;
        Cell { t, c: burst * t }
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let cells = [per_minute(4, 4)];
        let mut tats = Vec::new();
        for _ in 0..4 {
            assert_eq!(reserve(&cells, &mut tats, 0, 0, 0), Verdict::Admit { at: 0 });
        }
        assert_eq!(reserve(&cells, &mut tats, 0, 0, 0), Verdict::Refuse { at: 15 * S });
        assert_eq!(reserve(&cells, &mut tats, 15 * S, 0, 0), Verdict::Admit { at: 15 * S });
        assert_eq!(remaining(cells[0], tats[0], 15 * S), (0, 60 * S));
        assert_eq!(remaining(cells[0], tats[0], 45 * S), (2, 30 * S));
    }

    #[test]
    fn a_refusal_by_one_window_spends_nothing_in_the_others() {
        // 4/min and 5/day: the fifth request at once is refused by the minute window and leaves the
        // day window untouched, so the day still has room for one more a minute later.
        let day = Cell { t: 86_400 * S / 5, c: 86_400 * S };
        let cells = [per_minute(4, 4), day];
        let mut tats = Vec::new();
        for _ in 0..4 {
            assert!(matches!(reserve(&cells, &mut tats, 0, 0, 0), Verdict::Admit { .. }));
        }
        let before = tats.clone();
        assert!(matches!(reserve(&cells, &mut tats, 0, 0, 0), Verdict::Refuse { .. }));
        assert_eq!(tats, before);
        assert!(matches!(reserve(&cells, &mut tats, 60 * S, 0, 0), Verdict::Admit { .. }));
        let refused = reserve(&cells, &mut tats, 120 * S, 0, 0);
        // The day window has room for 5: the sixth conforms only a fifth of a day after the first.
        assert_eq!(refused, Verdict::Refuse { at: 86_400 * S / 5 });
    }

    #[test]
    fn reservations_queue_in_order_and_the_newest_can_be_given_back() {
        let cells = [per_minute(60, 1)]; // one a second, no burst
        let mut tats = Vec::new();
        let ats: Vec<u64> = (0..3)
            .map(|_| match reserve(&cells, &mut tats, 0, 0, 10 * S) {
                Verdict::Admit { at } => at,
                v => panic!("{v:?}"),
            })
            .collect();
        assert_eq!(ats, [0, S, 2 * S]);
        let newest = tats.clone();
        assert!(release(&cells, &mut tats, &newest));
        assert_eq!(reserve(&cells, &mut tats, 0, 0, 10 * S), Verdict::Admit { at: 2 * S });
        // An older reservation cannot be given back without reordering the queue.
        assert!(!release(&cells, &mut tats, &[2 * S]));
        // Waiting longer than allowed is a refusal that changes nothing.
        assert_eq!(reserve(&cells, &mut tats, 0, 0, S), Verdict::Refuse { at: 3 * S });
    }

    #[test]
    fn a_pause_delays_every_window() {
        let cells = [per_minute(60, 60)];
        let mut tats = Vec::new();
        assert_eq!(reserve(&cells, &mut tats, 0, 5 * S, 0), Verdict::Refuse { at: 5 * S });
        assert_eq!(reserve(&cells, &mut tats, 0, 5 * S, 5 * S), Verdict::Admit { at: 5 * S });
        assert!(!idle(&tats, 5 * S));
        assert!(idle(&tats, 6 * S));
    }
}

//! `mbarrier` objects as the PTX ISA defines them: a current phase, the arrivals still
//! pending in it, the arrivals each phase expects and a transaction count (bytes that
//! asynchronous copies still have to deliver). A phase completes when its pending
//! arrivals and its transaction count both reach zero; the next phase then starts with
//! the expected arrival count.
//!
//! The interpreter keeps these states beside shared memory (keyed by the object's shared
//! offset); the object's 8 bytes themselves are not modelled.

/// Largest arrival count and magnitude of the transaction count (2^20 - 1).
pub(crate) const MAX_COUNT: u32 = (1 << 20) - 1;

/// One initialized mbarrier object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mbarrier {
    /// Arrivals each phase expects (the `init` count).
    expected: u32,
    /// Arrivals still missing in the current phase.
    pending: u32,
    /// Transaction count of the current phase (expected minus completed bytes).
    tx: i64,
    /// Number of completed phases: the current phase's index, its parity in bit 0.
    pub phase: u64,
}

/// A use of an mbarrier that the PTX ISA leaves undefined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Misuse {
    /// More arrivals than the phase has pending.
    Arrivals { count: u32, pending: u32 },
    /// The transaction count left its range, or went below zero with every arrival of
    /// the phase in (more bytes completed than expected).
    Tx { tx: i64 },
}

impl std::fmt::Display for Misuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misuse::Arrivals { count, pending } => write!(
                f,
                "{count} arrival(s) on an mbarrier phase with {pending} pending"
            ),
            Misuse::Tx { tx } => write!(
                f,
                "the transaction count would be {tx} (more bytes completed than expected, or outside +-(2^20 - 1))"
            ),
        }
    }
}

impl Mbarrier {
    /// `mbarrier.init` with `count` expected arrivals (1 to [`MAX_COUNT`]).
    pub fn new(count: u32) -> Mbarrier {
        Mbarrier {
            expected: count,
            pending: count,
            tx: 0,
            phase: 0,
        }
    }

    /// Completes the current phase when nothing is pending; returns whether it did.
    fn settle(&mut self) -> bool {
        if self.pending == 0 && self.tx == 0 {
            self.phase += 1;
            self.pending = self.expected;
            true
        } else {
            false
        }
    }

    /// `count` arrivals (`.noComplete`: the phase must not complete by them). Returns the
    /// state (the index of the phase arrived on) and whether the phase completed. On
    /// misuse the pending count is clamped at zero (and the phase completes).
    pub fn arrive(&mut self, count: u32, no_complete: bool) -> (u64, bool, Option<Misuse>) {
        let state = self.phase;
        let mut bad = None;
        if count > self.pending || (no_complete && count == self.pending) {
            bad = Some(Misuse::Arrivals {
                count,
                pending: self.pending,
            });
        }
        self.pending = self.pending.saturating_sub(count);
        (state, self.settle(), bad)
    }

    /// Adds `bytes` to the transaction count (`expect_tx`).
    pub fn expect_tx(&mut self, bytes: u32) -> Option<Misuse> {
        self.tx += i64::from(bytes);
        (self.tx > i64::from(MAX_COUNT)).then_some(Misuse::Tx { tx: self.tx })
    }

    /// Subtracts `bytes` from the transaction count (`complete_tx`, a bulk copy's
    /// delivery); returns whether the phase completed. A count below zero with no
    /// arrival pending is misuse: it is clamped to zero.
    pub fn complete_tx(&mut self, bytes: u32) -> (bool, Option<Misuse>) {
        self.tx -= i64::from(bytes);
        let mut bad = None;
        if self.tx < -i64::from(MAX_COUNT) || (self.tx < 0 && self.pending == 0) {
            bad = Some(Misuse::Tx { tx: self.tx });
            self.tx = 0;
        }
        (self.settle(), bad)
    }

    /// Whether the phase of parity `parity` (bit 0) has completed: the current or the
    /// immediately preceding phase has that parity, and only the preceding one is done.
    pub fn parity_done(&self, parity: u64) -> bool {
        self.phase & 1 != parity & 1
    }

    /// Whether the phase a `state` from `arrive` names has completed.
    pub fn state_done(&self, state: u64) -> bool {
        self.phase > state
    }
}

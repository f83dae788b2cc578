//! The one source of randomness in core: seeded, so a simulation replays.
//! Production seeds it from the OS once at start; nothing in core calls
//! `thread_rng`.

use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::{Rng as _, RngCore, SeedableRng};

/// A seeded, shareable random number generator.
#[derive(Debug)]
pub struct Rng {
    rng: Mutex<SmallRng>,
    buggify: bool,
}

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng { rng: Mutex::new(SmallRng::seed_from_u64(seed)), buggify: false }
    }

    /// The simulator's RNG: [`Rng::buggify`] may fire.
    pub fn seeded_with_buggify(seed: u64) -> Rng {
        Rng { buggify: true, ..Rng::seeded(seed) }
    }

    /// FoundationDB's BUGGIFY: true with probability `p`, but only in the
    /// simulator; production code uses it to take rare paths (an early
    /// segment roll, a skipped flush round) often enough to be tested.
    pub fn buggify(&self, p: f64) -> bool {
        self.buggify && self.chance(p)
    }

    pub fn next_u64(&self) -> u64 {
        self.rng.lock().expect("rng lock").next_u64()
    }

    /// 16 random bytes, e.g. for a topic id.
    pub fn bytes16(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.rng.lock().expect("rng lock").fill_bytes(&mut b);
        b
    }

    /// True with probability `p`.
    pub fn chance(&self, p: f64) -> bool {
        self.rng.lock().expect("rng lock").gen_bool(p.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_seed_same_sequence() {
        let (a, b) = (super::Rng::seeded(5), super::Rng::seeded(5));
        assert_eq!((0..8).map(|_| a.next_u64()).collect::<Vec<_>>(), (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
    }
}

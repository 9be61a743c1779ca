//! Helpers of the event-stream tests (`tests/events.rs`,
//! `tests/events_nested.rs`): host tensors, offsets and adversarial
//! nestings of users' sessions.

#![allow(dead_code)] // Each test file uses a different subset.

use jagged::ir::{DType, DenseTensor};
use jagged::testing::Rng;

pub fn tensor(dtype: DType, shape: Vec<usize>, values: &[f64]) -> DenseTensor {
    DenseTensor::from_f64(dtype, shape, values).unwrap_or_else(|e| panic!("{e}"))
}

pub fn offsets_of(lengths: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut o = vec![0];
    for l in lengths {
        o.push(o[o.len() - 1] + l);
    }
    o
}

pub fn index_tensor(dtype: DType, v: &[usize]) -> DenseTensor {
    let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    tensor(dtype, vec![v.len()], &f)
}

pub fn raw_index(dtype: DType, v: &[i64]) -> DenseTensor {
    let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    tensor(dtype, vec![v.len()], &f)
}

/// A nesting: per user, its sessions' lengths.
pub type Nesting = Vec<Vec<usize>>;

/// Nestings with every edge: no user; users without sessions; empty
/// sessions first, last and between; one session; sessions longer than
/// 1024 rows (and than any tile); a random batch.
pub fn adversarial_nestings(rng: &mut Rng) -> Vec<Nesting> {
    let random: Nesting = (0..1 + rng.below(5))
        .map(|_| (0..rng.below(4)).map(|_| rng.below(40)).collect())
        .collect();
    vec![
        vec![],
        vec![vec![], vec![]],
        vec![vec![0, 0], vec![], vec![0]],
        vec![vec![1]],
        vec![vec![0, 3, 0], vec![], vec![5, 0, 2], vec![1]],
        vec![vec![1500]],
        vec![vec![0, 2, 1100], vec![], vec![33, 1025]],
        random,
    ]
}

/// The offsets of a nesting: `(session_offsets, user_offsets)`.
pub fn nesting_offsets(n: &Nesting) -> (Vec<usize>, Vec<usize>) {
    let sessions = offsets_of(n.iter().flatten().copied());
    let users = offsets_of(n.iter().map(Vec::len));
    (sessions, users)
}

pub fn random_values(rng: &mut Rng, dtype: DType, n: usize) -> Vec<f64> {
    (0..n).map(|_| dtype.round(rng.float(2.0))).collect()
}

//! Testing a jagged op the way the project tests its own: adversarial
//! lengths, random inputs for any graph, poisoned outputs, the tolerances of
//! the f64 reference, and [`check_against_reference`], which runs a graph on
//! a runtime's backend (the emulator without a GPU) and compares every output
//! with the reference evaluator.
//!
//! ```no_run
//! use jagged::ir::{AttrValue, Graph};
//! use jagged::runtime::{BackendKind, Runtime};
//! use jagged::testing::{Rng, check_against_reference};
//!
//! let graph = Graph::parse("graph g { ... }").unwrap();
//! let mut rt = Runtime::with_backend(BackendKind::Emu).unwrap();
//! let mut rng = Rng::new(7);
//! check_against_reference(&graph, &mut rt, 16, &[], &mut rng).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fmt;

use jagged_codegen::Spec;
use jagged_ir::{AttrValue, DType, DenseTensor, Dim, Graph, Node};
use jagged_runtime::{GraphRunError, Runtime};

/// A small deterministic generator (splitmix64): reproducible test inputs
/// without a dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform in `[-scale, scale)`.
    pub fn float(&mut self, scale: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (2.0 * u - 1.0) * scale
    }
}

/// Sequence lengths that exercise every edge of the jagged layout for a
/// given `max_len`: no sequence (`B = 0`), only empty ones (`T = 0`), a single
/// row, lengths above `max_len`, lengths that are no multiple of any tile,
/// and a random batch.
pub fn adversarial_lengths(max_len: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let random: Vec<usize> = (0..1 + rng.below(6))
        .map(|_| rng.below(max_len + 4))
        .collect();
    vec![
        vec![],
        vec![0, 0],
        vec![1],
        vec![0, max_len + 3, 1, max_len, 2],
        vec![max_len.saturating_sub(1).max(1), 17 % (max_len + 1), 0, 5],
        random,
    ]
}

/// The tolerance of DESIGN.md for outputs of `dtype`: `||out - ref|| /
/// ||ref||` against the f64 reference.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2e-3,
        DType::BF16 => 1e-2,
        _ => 1e-5,
    }
}

/// How close an output must be: `||out - ref|| <= rel * ||ref|| + abs *
/// sqrt(n)`. The absolute part is for results that cancel (a sum of terms
/// of order 1 that is nearly 0 carries the terms' f32 rounding); the
/// builtin ops are held to [`Tolerance::design`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative to the reference's norm.
    pub rel: f64,
    /// Per element, in absolute terms.
    pub abs: f64,
}

impl Tolerance {
    /// DESIGN.md's relative tolerance of `dtype`, nothing absolute.
    pub fn design(dtype: DType) -> Tolerance {
        Tolerance {
            rel: tolerance(dtype),
            abs: 0.0,
        }
    }

    /// For random compositions of ops on values of order 1: twice the
    /// relative tolerance, plus `1e-4` absolute per element.
    pub fn composed(dtype: DType) -> Tolerance {
        Tolerance {
            rel: 2.0 * tolerance(dtype),
            abs: 1e-4,
        }
    }

    /// Whether `got` is close enough to `reference` (NaN never is).
    pub fn accepts(&self, got: &[f64], reference: &[f64]) -> bool {
        if got.len() != reference.len() || got.iter().chain(reference).any(|x| x.is_nan()) {
            return false;
        }
        let diff: f64 = got
            .iter()
            .zip(reference)
            .map(|(x, y)| if x == y { 0.0 } else { (x - y) * (x - y) })
            .sum();
        let norm: f64 = reference.iter().map(|y| y * y).sum();
        diff.sqrt() <= self.rel * norm.sqrt() + self.abs * (reference.len() as f64).sqrt()
    }
}

/// `||a - b|| / ||b||` (absolute when `b` is zero); NaN anywhere gives
/// infinity, so NaN never passes.
pub fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.iter().chain(b).any(|x| x.is_nan()) {
        return f64::INFINITY;
    }
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    if diff == 0.0 {
        0.0
    } else if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

/// The offsets inputs of `graph`: the inputs a sequence set is built from.
fn offsets_inputs(graph: &Graph) -> Vec<String> {
    graph
        .nodes()
        .iter()
        .filter_map(|(_, n)| match n {
            Node::Seqs { offsets, .. } => match graph.node(*offsets) {
                Node::Input { name, .. } => Some(name.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Random inputs for every input of `graph` on sequences of `lengths`:
/// offsets from the lengths, other index inputs of shape `[B]` as lengths,
/// masks with any nonzero value set (not only 1), floats uniform in
/// `[-amplitude, amplitude)` rounded to their dtype.
pub fn random_inputs(
    graph: &Graph,
    lengths: &[usize],
    max_len: usize,
    amplitude: f64,
    rng: &mut Rng,
) -> Vec<(String, DenseTensor)> {
    let batch = lengths.len();
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    let offsets_names = offsets_inputs(graph);
    graph
        .inputs()
        .map(|(_, name, ty)| {
            let shape: Vec<usize> = ty
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Ragged(_) => total,
                    Dim::Batch => batch,
                    Dim::BatchPlusOne => batch + 1,
                    Dim::MaxLen => max_len,
                    Dim::Static(n) => *n,
                })
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f64> = if offsets_names.iter().any(|o| o == name) {
                offsets.clone()
            } else {
                match ty.dtype {
                    DType::Bool => (0..n).map(|_| rng.below(2) as f64).collect(),
                    DType::U8 => (0..n)
                        .map(|_| {
                            if rng.below(2) == 0 {
                                0.0
                            } else {
                                1.0 + rng.below(255) as f64
                            }
                        })
                        .collect(),
                    DType::I32 | DType::I64 if shape == [batch] => {
                        lengths.iter().map(|&l| l as f64).collect()
                    }
                    DType::I32 | DType::I64 => (0..n).map(|_| rng.below(7) as f64).collect(),
                    dtype => (0..n).map(|_| dtype.round(rng.float(amplitude))).collect(),
                }
            };
            let tensor = DenseTensor::from_f64(ty.dtype, shape, &values)
                .unwrap_or_else(|e| unreachable!("shape and values agree by construction: {e}"));
            (name.to_string(), tensor)
        })
        .collect()
}

/// Why a check against the reference failed.
#[derive(Debug)]
pub enum CheckFailure {
    /// The reference evaluator refused the inputs (a bug in the test inputs).
    Reference(jagged_ir::EvalError),
    /// Compiling or running on the backend failed.
    Run(GraphRunError),
    /// An output differs from the reference beyond its tolerance.
    Mismatch {
        /// The output's name.
        output: String,
        /// The sequence lengths of the case.
        lengths: Vec<usize>,
        /// The relative L2 error (infinite for NaN or a shape mismatch).
        error: f64,
        /// The tolerance it was held to.
        tolerance: Tolerance,
    },
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckFailure::Reference(e) => write!(f, "the reference refused the inputs: {e}"),
            CheckFailure::Run(e) => write!(f, "running on the backend failed: {e}"),
            CheckFailure::Mismatch {
                output,
                lengths,
                error,
                tolerance,
            } => write!(
                f,
                "output `{output}` on lengths {lengths:?}: relative error {error:e} \
                 beyond {tolerance:?}"
            ),
        }
    }
}

impl std::error::Error for CheckFailure {}

/// The attributes of a run: `max_len`, then the given ones, then defaults.
fn run_attrs<'a>(
    graph: &Graph,
    max_len: usize,
    attrs: &[(&'a str, AttrValue)],
) -> Vec<(&'a str, AttrValue)> {
    let mut all: Vec<(&str, AttrValue)> = attrs.to_vec();
    if graph.attr(jagged_ir::graph::MAX_LEN).is_some()
        && !attrs.iter().any(|(n, _)| *n == "max_len")
    {
        all.push(("max_len", AttrValue::Index(max_len)));
    }
    all
}

/// Runs `graph` on `rt` (outputs poisoned, so an element no kernel writes
/// reads as NaN) on every case of [`adversarial_lengths`] with random inputs,
/// and compares each output with the f64 reference within [`tolerance`] of
/// its dtype. `attrs` gives attributes besides `max_len` (others take their
/// defaults). Returns the number of cases checked.
pub fn check_against_reference(
    graph: &Graph,
    rt: &mut Runtime,
    max_len: usize,
    attrs: &[(&str, AttrValue)],
    rng: &mut Rng,
) -> Result<usize, CheckFailure> {
    let spec = Spec::for_graph(graph, max_len as u64, rt.preferred_arch())
        .map_err(|e| CheckFailure::Run(e.into()))?;
    check_spec_against_reference(graph, &spec, rt, max_len, attrs, rng, Tolerance::design)
}

/// [`check_against_reference`] for a given spec (e.g. another arch) and
/// tolerance (e.g. [`Tolerance::composed`]).
pub fn check_spec_against_reference(
    graph: &Graph,
    spec: &Spec,
    rt: &mut Runtime,
    max_len: usize,
    attrs: &[(&str, AttrValue)],
    rng: &mut Rng,
    tolerance: fn(DType) -> Tolerance,
) -> Result<usize, CheckFailure> {
    rt.set_poison_outputs(true);
    let attrs = run_attrs(graph, max_len, attrs);
    let cases = adversarial_lengths(max_len, rng);
    for lengths in &cases {
        let inputs = random_inputs(graph, lengths, max_len, 2.0, rng);
        let named: Vec<(&str, &DenseTensor)> =
            inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let expected =
            jagged_ir::evaluate(graph, &named, &attrs).map_err(CheckFailure::Reference)?;
        let got = rt
            .run_graph_host(graph, spec, &named, &attrs)
            .map_err(CheckFailure::Run)?;
        compare(&expected, &got, lengths, tolerance)?;
    }
    Ok(cases.len())
}

fn compare(
    expected: &BTreeMap<String, DenseTensor>,
    got: &BTreeMap<String, DenseTensor>,
    lengths: &[usize],
    tolerance: fn(DType) -> Tolerance,
) -> Result<(), CheckFailure> {
    for (name, reference) in expected {
        let tol = tolerance(reference.dtype());
        let (ok, error) = match got.get(name) {
            Some(out) if out.shape() == reference.shape() => {
                let (out, reference) = (out.to_f64(), reference.to_f64());
                (tol.accepts(&out, &reference), rel_l2(&out, &reference))
            }
            _ => (false, f64::INFINITY),
        };
        if !ok {
            return Err(CheckFailure::Mismatch {
                output: name.clone(),
                lengths: lengths.to_vec(),
                error,
                tolerance: tol,
            });
        }
    }
    Ok(())
}

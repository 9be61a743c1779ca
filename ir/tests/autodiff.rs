//! The autodiff pass (`jagged_ir::autodiff`): every backward graph, run by
//! the f64 reference, matches central finite differences of its forward
//! graph, on adversarial lengths (`B = 0`, empty sequences, lengths past
//! `max_len`), and the nodes whose adjoint the IR cannot express are typed
//! errors.
//!
//! The scalar checked is `L = sum_o sum(c_o * o)` for random cotangents
//! `c_o`; each gradient element is compared with `(L(x + h) - L(x - h)) / 2h`
//! (`h = 1e-6` in f64) within `|ad - fd| <= 1e-5 |fd| + 1e-6`.

use std::collections::BTreeMap;

use jagged_ir::autodiff::{AutodiffError, backward, cotangent_name, gradient_name};
use jagged_ir::ops::{self, Activation, AttentionSpec, FbgemmAttentionSpec, JaggedSpec};
use jagged_ir::{
    AttrKind, AttrValue, BinaryOp, CompareOp, DType, DenseTensor, Dim, Graph, GraphBuilder, Handle,
    IndexPredicate, MAX_LEN, Node, RankOrder, ReduceOp, ScanMode, TensorType, TopKPart, UnaryOp,
    evaluate,
};

/// splitmix64: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }
}

/// How one graph is checked.
#[derive(Clone)]
struct Check {
    /// `max_len`.
    max_len: usize,
    /// The range of float inputs.
    domain: (f64, f64),
    /// Extra attributes.
    attrs: Vec<(&'static str, AttrValue)>,
    /// Only these outputs get a nonzero cotangent (all when `None`).
    only: Option<Vec<&'static str>>,
    /// Finite-difference step and tolerances.
    step: f64,
    rtol: f64,
    atol: f64,
    seed: u64,
}

impl Default for Check {
    fn default() -> Self {
        Check {
            max_len: 3,
            domain: (-1.5, 1.5),
            attrs: Vec::new(),
            only: None,
            step: 1e-6,
            rtol: 1e-5,
            atol: 1e-6,
            seed: 1,
        }
    }
}

impl Check {
    fn positive() -> Self {
        Check {
            domain: (0.5, 2.0),
            ..Check::default()
        }
    }
}

/// The lengths of the cases: no sequence, only empty ones, one row, lengths
/// past `max_len`, and a random batch.
fn cases(max_len: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let random: Vec<usize> = (0..1 + rng.below(4))
        .map(|_| rng.below(max_len + 3))
        .collect();
    vec![
        vec![],
        vec![0, 0],
        vec![1],
        vec![0, max_len + 2, 1, max_len, 2],
        random,
    ]
}

/// The names of the inputs that sequence sets are built from.
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

/// Random inputs for the forward graph's inputs.
fn random_inputs(
    graph: &Graph,
    lens: &[usize],
    check: &Check,
    rng: &mut Rng,
) -> BTreeMap<String, DenseTensor> {
    let batch = lens.len();
    let total: usize = lens.iter().sum();
    let mut offsets = vec![0.0];
    for &l in lens {
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
                    Dim::MaxLen => check.max_len,
                    Dim::Static(n) => *n,
                })
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f64> = if offsets_names.iter().any(|o| o == name) {
                offsets.clone()
            } else if ty.dtype == DType::Bool {
                (0..n).map(|_| rng.below(2) as f64).collect()
            } else if ty.dtype.is_index() {
                (0..n).map(|_| rng.below(5) as f64).collect()
            } else {
                (0..n)
                    .map(|_| rng.uniform(check.domain.0, check.domain.1))
                    .collect()
            };
            let t = DenseTensor::from_f64(ty.dtype, shape, &values).expect("input");
            (name.to_string(), t)
        })
        .collect()
}

fn attrs_of(graph: &Graph, check: &Check) -> Vec<(&'static str, AttrValue)> {
    let mut attrs = check.attrs.clone();
    if graph.attr(MAX_LEN).is_some() {
        attrs.push(("max_len", AttrValue::Index(check.max_len)));
    }
    attrs
}

fn run(
    graph: &Graph,
    inputs: &BTreeMap<String, DenseTensor>,
    attrs: &[(&str, AttrValue)],
) -> BTreeMap<String, DenseTensor> {
    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    evaluate(graph, &named, attrs).unwrap_or_else(|e| panic!("{}: {e}\n{graph}", graph.name()))
}

/// `sum_o sum(c_o * o)`.
fn objective(
    outputs: &BTreeMap<String, DenseTensor>,
    cotangents: &BTreeMap<String, DenseTensor>,
) -> f64 {
    cotangents
        .iter()
        .map(|(name, c)| {
            let o = &outputs[name];
            o.to_f64()
                .iter()
                .zip(c.to_f64())
                .map(|(a, b)| a * b)
                .sum::<f64>()
        })
        .sum()
}

/// Checks the backward graph of `graph` against finite differences on every
/// case; returns the number of gradient elements compared.
fn check_gradients(graph: &Graph, wrt: &[&str], check: &Check) -> usize {
    let bwd = backward(graph, wrt).unwrap_or_else(|e| panic!("{}: {e}\n{graph}", graph.name()));
    // The backward graph is an ordinary graph: its text parses back to it.
    let reparsed = Graph::parse(&bwd.to_string()).expect("backward graph text");
    assert_eq!(reparsed, bwd);
    for (k, name) in wrt.iter().enumerate() {
        assert_eq!(bwd.outputs()[k].name, gradient_name(name));
    }
    let attrs = attrs_of(graph, check);
    let mut rng = Rng(check.seed);
    let mut compared = 0;
    for lens in cases(check.max_len, &mut rng) {
        let inputs = random_inputs(graph, &lens, check, &mut rng);
        let outputs = run(graph, &inputs, &attrs);
        let mut cotangents = BTreeMap::new();
        for out in graph.outputs() {
            let o = &outputs[&out.name];
            if !o.dtype().is_float() {
                continue;
            }
            let keep = check
                .only
                .as_ref()
                .is_none_or(|only| only.contains(&out.name.as_str()));
            let values: Vec<f64> = (0..o.data().len())
                .map(|_| if keep { rng.uniform(-1.0, 1.0) } else { 0.0 })
                .collect();
            let c = DenseTensor::from_f64(o.dtype(), o.shape().to_vec(), &values).expect("cot");
            cotangents.insert(out.name.clone(), c);
        }
        let mut bwd_inputs = inputs.clone();
        for (name, c) in &cotangents {
            bwd_inputs.insert(cotangent_name(name), c.clone());
        }
        let grads = run(&bwd, &bwd_inputs, &attrs);
        for name in wrt {
            let x = &inputs[*name];
            let grad = &grads[&gradient_name(name)];
            assert_eq!(grad.shape(), x.shape(), "shape of the gradient of {name}");
            assert_eq!(grad.dtype(), x.dtype(), "dtype of the gradient of {name}");
            let ad = grad.to_f64();
            let base = x.to_f64();
            for e in 0..base.len() {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[e] += delta;
                    let mut perturbed = inputs.clone();
                    perturbed.insert(
                        name.to_string(),
                        DenseTensor::from_f64(x.dtype(), x.shape().to_vec(), &v).expect("x"),
                    );
                    objective(&run(graph, &perturbed, &attrs), &cotangents)
                };
                let fd = (at(check.step) - at(-check.step)) / (2.0 * check.step);
                assert!(
                    (ad[e] - fd).abs() <= check.rtol * fd.abs() + check.atol,
                    "{}: d/d{name}[{e}] on lengths {lens:?}: autodiff {} vs finite \
                     differences {fd}\nforward:\n{graph}\nbackward:\n{bwd}",
                    graph.name(),
                    ad[e]
                );
                compared += 1;
            }
        }
    }
    compared
}

// ---- graph building ----

fn f64j(s: Handle<Node>, inner: &[usize]) -> TensorType {
    TensorType::jagged(DType::F64, s, inner)
}

fn f64d(symbolic: &[Dim], inner: &[usize]) -> TensorType {
    TensorType::dense(DType::F64, symbolic, inner)
}

/// A graph with `max_len`, `offsets` and a sequence set (truncated when
/// `truncate`), completed by `f`.
fn graph(name: &str, truncate: bool, f: impl FnOnce(&mut GraphBuilder, Handle<Node>)) -> Graph {
    let mut b = GraphBuilder::new(name);
    b.declare_attr(MAX_LEN, AttrKind::Index, None);
    let o = b.input(
        "offsets",
        TensorType::new(DType::I32, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, truncate);
    f(&mut b, s);
    b.finish().unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `q [%s, 2] . k [%s, 2] -> [%s, %s]`: a pair value of random scores.
fn pair(b: &mut GraphBuilder, s: Handle<Node>) -> Handle<Node> {
    let q = b.input("q", f64j(s, &[2]));
    let k = b.input("k", f64j(s, &[2]));
    b.contract(q, "id", k, "jd", "ij", DType::F64)
}

/// `q [%s, 2, 2] . k [%s, 2, 2] -> [%s, %s, 2]` (heads last).
fn pair_heads(b: &mut GraphBuilder, s: Handle<Node>) -> Handle<Node> {
    let q = b.input("q", f64j(s, &[2, 2]));
    let k = b.input("k", f64j(s, &[2, 2]));
    b.contract(q, "ihd", k, "jhd", "ijh", DType::F64)
}

// ---- elementwise ----

#[test]
fn unary_ops() {
    use UnaryOp::*;
    let mut n = 0;
    for op in [Neg, Exp, Log, Silu, Sqrt, Rsqrt, Abs, Relu, Sigmoid, Tanh] {
        let g = graph(&format!("{op:?}"), true, |b, s| {
            let x = b.input("x", f64j(s, &[3]));
            let y = b.unary(op, x);
            b.output("y", y);
        });
        let check = match op {
            Log | Sqrt | Rsqrt => Check::positive(),
            _ => Check::default(),
        };
        n += check_gradients(&g, &["x"], &check);
    }
    assert!(n > 300, "{n}");
}

#[test]
fn unary_ops_untruncated_and_composed() {
    // On an untruncated set (every row counts), a chain of ops reusing x.
    let g = graph("chain", false, |b, s| {
        let x = b.input("x", f64j(s, &[2]));
        let t = b.tanh(x);
        let e = b.exp(t);
        let m = b.mul(e, x);
        let y = b.silu(m);
        let z = b.sigmoid(x);
        b.output("y", y);
        b.output("z", z);
    });
    check_gradients(&g, &["x"], &Check::default());
}

#[test]
fn casts_between_floats() {
    // f64 -> f32 -> f64: the gradient passes through the roundings as the
    // identity; finite differences see the f32 rounding, hence the step.
    let g = graph("cast", true, |b, s| {
        let x = b.input("x", f64j(s, &[2]));
        let y = b.cast(x, DType::F32);
        let y = b.cast(y, DType::F64);
        let y = b.mul(y, x);
        b.output("y", y);
    });
    let check = Check {
        step: 1e-3,
        rtol: 1e-3,
        atol: 1e-3,
        ..Check::default()
    };
    check_gradients(&g, &["x"], &check);
    // An integer cast stops the gradient (piecewise constant).
    let g = graph("cast_int", true, |b, s| {
        let x = b.input("x", f64j(s, &[2]));
        let i = b.cast(x, DType::I32);
        let f = b.cast(i, DType::F64);
        let y = b.add(f, x);
        b.output("y", y);
    });
    check_gradients(
        &g,
        &["x"],
        &Check {
            domain: (0.1, 0.9),
            ..Check::default()
        },
    );
}

/// Builds `op(lhs, rhs)` for operand types made by `types`, and checks both
/// gradients.
fn binary_case(
    op: BinaryOp,
    name: &str,
    truncate: bool,
    types: impl Fn(Handle<Node>) -> (TensorType, TensorType),
) {
    let g = graph(&format!("{op:?}_{name}"), truncate, |b, s| {
        let (ta, tb) = types(s);
        let a = b.input("a", ta);
        let c = b.input("c", tb);
        let y = b.binary(op, a, c);
        b.output("y", y);
    });
    let check = match op {
        BinaryOp::Div => Check::positive(),
        _ => Check::default(),
    };
    check_gradients(&g, &["a", "c"], &check);
}

#[test]
fn binary_ops_with_broadcasting() {
    use BinaryOp::*;
    for op in [Add, Sub, Mul, Div, Max, Min] {
        binary_case(op, "same", true, |s| (f64j(s, &[3]), f64j(s, &[3])));
        binary_case(op, "per_seq", true, |s| {
            (f64j(s, &[3]), f64d(&[Dim::Batch], &[3]))
        });
        binary_case(op, "per_seq_lhs", true, |s| {
            (f64d(&[Dim::Batch], &[3]), f64j(s, &[3]))
        });
        binary_case(op, "per_row", true, |s| (f64j(s, &[3]), f64j(s, &[])));
        binary_case(op, "per_seq_scalar", false, |s| {
            (f64j(s, &[3]), f64d(&[Dim::Batch], &[]))
        });
        binary_case(op, "padded", true, |s| {
            (f64j(s, &[3]), f64d(&[Dim::Batch, Dim::MaxLen], &[3]))
        });
        binary_case(op, "padded_rows", true, |s| {
            (f64d(&[Dim::Batch, Dim::MaxLen], &[]), f64j(s, &[3]))
        });
        binary_case(op, "dense", true, |_| {
            (
                f64d(&[Dim::Batch, Dim::MaxLen], &[3]),
                f64d(&[Dim::Batch], &[3]),
            )
        });
        binary_case(op, "dense_rows", true, |_| {
            (
                f64d(&[Dim::Batch, Dim::MaxLen], &[3]),
                f64d(&[Dim::Batch, Dim::MaxLen], &[]),
            )
        });
        binary_case(op, "unbatched", true, |_| {
            (f64d(&[], &[3]), f64d(&[], &[3]))
        });
        binary_case(op, "unbatched_scalar", true, |_| {
            (f64d(&[], &[2, 3]), f64d(&[], &[]))
        });
    }
}

#[test]
fn binary_ops_on_pairs() {
    // [%s, %s] values meeting per-query rows, per-sequence values and padded rows.
    use BinaryOp::*;
    for op in [Add, Mul, Div, Max] {
        let g = graph(&format!("{op:?}_pair"), true, |b, s| {
            let p = pair(b, s);
            let r = b.input("r", f64j(s, &[]));
            let w = b.input("w", f64d(&[Dim::Batch], &[]));
            let d = b.input("d", f64d(&[Dim::Batch, Dim::MaxLen], &[]));
            let y = b.binary(op, p, r);
            let y = b.binary(op, y, w);
            let y = b.binary(op, d, y);
            let y = b.reduce(ReduceOp::Sum, y, 1);
            b.output("y", y);
        });
        let check = match op {
            Div => Check::positive(),
            _ => Check::default(),
        };
        check_gradients(&g, &["q", "k", "r", "w", "d"], &check);
    }
    // Heads: [%s, %s, 2] with [%s, 2] and [B, 2].
    let g = graph("pair_heads", true, |b, s| {
        let p = pair_heads(b, s);
        let r = b.input("r", f64j(s, &[2]));
        let w = b.input("w", f64d(&[Dim::Batch], &[2]));
        let y = b.mul(p, r);
        let y = b.sub(y, w);
        let y = b.reduce(ReduceOp::Sum, y, 1);
        b.output("y", y);
    });
    check_gradients(&g, &["q", "k", "r", "w"], &Check::default());
}

#[test]
fn pow_by_a_scalar() {
    for p in [3.0, 2.0, 0.5, -1.5] {
        let g = graph("pow_const", true, |b, s| {
            let x = b.input("x", f64j(s, &[3]));
            let e = b.constant(p, DType::F64);
            let y = b.pow(x, e);
            b.output("y", y);
        });
        check_gradients(&g, &["x"], &Check::positive());
    }
    let g = graph("pow_attr", true, |b, s| {
        b.declare_attr("p", AttrKind::Float, Some(AttrValue::Float(2.5)));
        let x = b.input("x", f64j(s, &[3]));
        let e = b.attr("p", DType::F64);
        let y = b.pow(x, e);
        b.output("y", y);
    });
    check_gradients(&g, &["x"], &Check::positive());
    // Negative bases with an integer exponent.
    let g = graph("pow_neg", true, |b, s| {
        let x = b.input("x", f64j(s, &[3]));
        let e = b.constant(3.0, DType::F64);
        let y = b.pow(x, e);
        b.output("y", y);
    });
    check_gradients(&g, &["x"], &Check::default());
    // A differentiated exponent of an unbatched base.
    let g = graph("pow_exponent", true, |b, _| {
        let x = b.input("x", f64d(&[], &[4]));
        let e = b.input("e", f64d(&[], &[]));
        let y = b.pow(x, e);
        b.output("y", y);
    });
    check_gradients(&g, &["x", "e"], &Check::positive());
}

#[test]
fn select_sends_the_gradient_to_the_chosen_branch() {
    let g = graph("select", true, |b, s| {
        let x = b.input("x", f64j(s, &[3]));
        let y = b.input("y", f64d(&[Dim::Batch], &[3]));
        let c = b.compare(CompareOp::Gt, x, y);
        let z = b.select(c, x, y);
        let zero = b.constant(0.0, DType::F64);
        let w = b.select(c, zero, x);
        b.output("z", z);
        b.output("w", w);
    });
    check_gradients(&g, &["x", "y"], &Check::default());
    // A bool input as the condition, a padded branch.
    let g = graph("select_mask", true, |b, s| {
        let m = b.input("m", TensorType::jagged(DType::Bool, s, &[]));
        let x = b.input("x", f64j(s, &[2]));
        let d = b.input("d", f64d(&[Dim::Batch, Dim::MaxLen], &[2]));
        let z = b.select(m, x, d);
        b.output("z", z);
    });
    check_gradients(&g, &["x", "d"], &Check::default());
    // Causal mask on pairs (the mask, lengths and positions carry nothing).
    let g = graph("select_causal", true, |b, s| {
        let p = pair(b, s);
        let pair_ty = TensorType::new(DType::Bool, vec![Dim::Ragged(s), Dim::Ragged(s)]);
        let allowed = b.mask(IndexPredicate::KeyNotAfterQuery, pair_ty);
        let zero = b.constant(0.0, DType::F64);
        let p = b.select(allowed, p, zero);
        let pos = b.position(
            1,
            TensorType::new(DType::F64, vec![Dim::Ragged(s), Dim::Ragged(s)]),
        );
        let y = b.mul(p, pos);
        let l = b.lengths(s, DType::I32);
        let l = b.cast(l, DType::F64);
        let y = b.reduce(ReduceOp::Sum, y, 1);
        let y = b.mul(y, l);
        b.output("y", y);
    });
    check_gradients(&g, &["q", "k"], &Check::default());
}

// ---- reductions, softmax, scans ----

const REDUCES: [ReduceOp; 4] = [
    ReduceOp::Sum,
    ReduceOp::Mean,
    ReduceOp::Max,
    ReduceOp::LogSumExp,
];

#[test]
fn reductions_over_every_kind_of_axis() {
    for op in REDUCES {
        for (axis, inner) in [(0, vec![3]), (1, vec![3]), (1, vec![2, 3]), (2, vec![2, 3])] {
            let g = graph(&format!("{op:?}_jagged_{axis}"), true, |b, s| {
                let x = b.input("x", f64j(s, &inner));
                let y = b.reduce(op, x, axis);
                b.output("y", y);
            });
            check_gradients(&g, &["x"], &Check::default());
        }
        for axis in [1, 2] {
            let g = graph(&format!("{op:?}_dense_{axis}"), true, |b, _| {
                let x = b.input("x", f64d(&[Dim::Batch, Dim::MaxLen], &[3]));
                let y = b.reduce(op, x, axis);
                b.output("y", y);
            });
            check_gradients(&g, &["x"], &Check::default());
        }
        let g = graph(&format!("{op:?}_unbatched"), true, |b, _| {
            let x = b.input("x", f64d(&[], &[3, 4]));
            let y = b.reduce(op, x, 0);
            let z = b.reduce(op, x, 1);
            b.output("y", y);
            b.output("z", z);
        });
        check_gradients(&g, &["x"], &Check::default());
        // Pairs: over the keys (last row axis), the queries (first), heads.
        for axis in [0, 1, 2] {
            let g = graph(&format!("{op:?}_pair_{axis}"), true, |b, s| {
                let p = pair_heads(b, s);
                let y = b.reduce(op, p, axis);
                // Two ragged dims cannot be returned: weigh and sum the keys.
                let y = if axis == 2 {
                    let w = b.input("w", f64j(s, &[]));
                    let y = b.mul(y, w);
                    b.reduce(ReduceOp::Sum, y, 1)
                } else {
                    y
                };
                b.output("y", y);
            });
            check_gradients(&g, &["q", "k"], &Check::default());
        }
    }
}

#[test]
fn reductions_with_masked_entries() {
    // -inf entries (a causal mask before logsumexp / softmax) get no gradient.
    for op in [ReduceOp::LogSumExp, ReduceOp::Max] {
        let g = graph(&format!("{op:?}_masked"), true, |b, s| {
            let p = pair(b, s);
            let pair_ty = TensorType::new(DType::Bool, vec![Dim::Ragged(s), Dim::Ragged(s)]);
            let allowed = b.mask(IndexPredicate::KeyNotBeforeQuery, pair_ty);
            let minus_inf = b.constant(f64::NEG_INFINITY, DType::F64);
            let p = b.select(allowed, p, minus_inf);
            let y = b.reduce(op, p, 1);
            b.output("y", y);
        });
        check_gradients(&g, &["q", "k"], &Check::default());
    }
}

#[test]
fn max_ties_share_the_gradient() {
    // x and x again: every line has its maximum twice; each gets g / 2.
    let g = graph("max_ties", true, |b, s| {
        let x = b.input("x", f64j(s, &[]));
        let d = b.to_padded(x);
        let y = b.reduce(ReduceOp::Max, x, 0);
        let z = b.reduce(ReduceOp::Max, d, 1);
        b.output("y", y);
        b.output("z", z);
    });
    let bwd = backward(&g, &["x"]).expect("backward");
    let offsets = DenseTensor::from_f64(DType::I32, vec![3], &[0.0, 3.0, 5.0]).expect("o");
    let x = DenseTensor::from_f64(DType::F64, vec![5], &[1.0, 4.0, 4.0, -2.0, -2.0]).expect("x");
    let gy = DenseTensor::from_f64(DType::F64, vec![2], &[1.0, 2.0]).expect("gy");
    let gz = DenseTensor::from_f64(DType::F64, vec![2], &[0.0, 0.0]).expect("gz");
    let out = evaluate(
        &bwd,
        &[
            ("offsets", &offsets),
            ("x", &x),
            ("grad_y", &gy),
            ("grad_z", &gz),
        ],
        &[("max_len", AttrValue::Index(3))],
    )
    .expect("eval");
    assert_eq!(out["grad_x"].to_f64(), vec![0.0, 0.5, 0.5, 1.0, 1.0]);
}

#[test]
fn softmax_over_every_kind_of_axis() {
    for axis in [0, 1] {
        let g = graph(&format!("softmax_jagged_{axis}"), true, |b, s| {
            let x = b.input("x", f64j(s, &[3]));
            let y = b.softmax(x, axis);
            b.output("y", y);
        });
        check_gradients(&g, &["x"], &Check::default());
    }
    for axis in [1, 2] {
        let g = graph(&format!("softmax_dense_{axis}"), true, |b, _| {
            let x = b.input("x", f64d(&[Dim::Batch, Dim::MaxLen], &[3]));
            let y = b.softmax(x, axis);
            b.output("y", y);
        });
        check_gradients(&g, &["x"], &Check::default());
    }
    for axis in [0, 1, 2] {
        let g = graph(&format!("softmax_pair_{axis}"), false, |b, s| {
            let p = pair_heads(b, s);
            let y = b.softmax(p, axis);
            let v = b.input("v", f64j(s, &[2, 2]));
            let o = b.contract(y, "ijh", v, "jhe", "ihe", DType::F64);
            b.output("o", o);
        });
        check_gradients(&g, &["q", "k", "v"], &Check::default());
    }
    let g = graph("softmax_unbatched", true, |b, _| {
        let x = b.input("x", f64d(&[], &[4]));
        let y = b.softmax(x, 0);
        b.output("y", y);
    });
    check_gradients(&g, &["x"], &Check::default());
}

#[test]
fn shifts_along_every_kind_of_axis() {
    for (axis, by) in [(0, 1i64), (0, -2), (1, 1), (1, -1)] {
        for truncate in [true, false] {
            let g = graph(
                &format!("shift_{axis}_{}_{truncate}", by.unsigned_abs()),
                truncate,
                |b, s| {
                    let x = b.input("x", f64j(s, &[3]));
                    // `x * shift(x)`: both paths of the gradient meet in `x`.
                    let y = b.shift(x, axis, by);
                    let y = b.mul(x, y);
                    b.output("y", y);
                },
            );
            check_gradients(&g, &["x"], &Check::default());
        }
    }
    for axis in [1, 2] {
        let g = graph(&format!("shift_dense_{axis}"), true, |b, _| {
            let x = b.input("x", f64d(&[Dim::Batch, Dim::MaxLen], &[3]));
            let y = b.shift(x, axis, -1);
            b.output("y", y);
        });
        check_gradients(&g, &["x"], &Check::default());
    }
}

/// A rank is piecewise constant: a weight chosen by it passes its own
/// gradient and none through the rank.
#[test]
fn rank_selected_weights() {
    let g = graph("rank_top2", true, |b, s| {
        let x = b.input("x", f64j(s, &[]));
        let r = b.rank(RankOrder::Descending, x, 0);
        let two = b.constant(2.0, DType::I32);
        let keep = b.compare(CompareOp::Lt, r, two);
        let zero = b.constant(0.0, DType::F64);
        let y = b.select(keep, x, zero);
        b.output("y", y);
    });
    check_gradients(&g, &["x"], &Check::default());
}

#[test]
fn scans() {
    for mode in [ScanMode::Inclusive, ScanMode::Exclusive, ScanMode::Complete] {
        let g = graph(&format!("scan_static_{mode:?}"), true, |b, _| {
            let x = b.input("x", f64d(&[Dim::Batch], &[4, 2]));
            let y = b.scan(mode, x, 1);
            let z = b.scan(mode, x, 2);
            b.output("y", y);
            b.output("z", z);
        });
        check_gradients(&g, &["x"], &Check::default());
        let g = graph(&format!("scan_unbatched_{mode:?}"), true, |b, _| {
            let x = b.input("x", f64d(&[], &[5]));
            let y = b.scan(mode, x, 0);
            b.output("y", y);
        });
        check_gradients(&g, &["x"], &Check::default());
    }
    for mode in [ScanMode::Inclusive, ScanMode::Exclusive] {
        let g = graph(&format!("scan_padded_{mode:?}"), true, |b, s| {
            let x = b.input("x", f64j(s, &[2]));
            let d = b.to_padded(x);
            let y = b.scan(mode, d, 1);
            b.output("y", y);
        });
        check_gradients(&g, &["x"], &Check::default());
    }
}

// ---- contractions, padding ----

#[test]
fn contractions() {
    // scores, then probabilities times values.
    let g = graph("attention_like", true, |b, s| {
        let p = pair(b, s);
        let v = b.input("v", f64j(s, &[3]));
        let o = b.contract(p, "ij", v, "jd", "id", DType::F64);
        b.output("o", o);
    });
    check_gradients(&g, &["q", "k", "v"], &Check::default());
    // A per-sequence outer product [B, d, e], and a dense batched operand.
    let g = graph("outer", true, |b, s| {
        let x = b.input("x", f64j(s, &[2]));
        let y = b.input("y", f64j(s, &[3]));
        let w = b.input("w", f64d(&[Dim::Batch], &[3, 2]));
        let o = b.contract(x, "id", y, "ie", "de", DType::F64);
        let z = b.contract(w, "ed", y, "ie", "id", DType::F64);
        let u = b.contract(x, "id", w, "ed", "ie", DType::F64);
        b.output("o", o);
        b.output("z", z);
        b.output("u", u);
    });
    check_gradients(&g, &["x", "y", "w"], &Check::default());
    // A contraction of a value with itself; an unbatched weight times an
    // unbatched vector.
    let g = graph("self", true, |b, s| {
        let x = b.input("x", f64j(s, &[2]));
        let gram = b.contract(x, "id", x, "jd", "ij", DType::F64);
        let r = b.reduce(ReduceOp::Sum, gram, 1);
        b.output("r", r);
        let m = b.input("m", f64d(&[], &[3, 2]));
        let u = b.input("u", f64d(&[], &[2]));
        let mu = b.contract(m, "ed", u, "d", "e", DType::F64);
        b.output("mu", mu);
    });
    check_gradients(&g, &["x", "m", "u"], &Check::default());
    // Letters summed in one operand only: the gradient is spread along them.
    let g = graph("summed_alone", true, |b, s| {
        let x = b.input("x", f64j(s, &[3]));
        let w = b.input("w", f64d(&[Dim::Batch], &[2]));
        let y = b.input("y", f64j(s, &[2]));
        let o = b.contract(x, "id", w, "e", "e", DType::F64);
        let z = b.contract(x, "id", y, "ie", "e", DType::F64);
        let u = b.contract(w, "e", x, "id", "ie", DType::F64);
        b.output("o", o);
        b.output("z", z);
        b.output("u", u);
    });
    check_gradients(&g, &["x", "w", "y"], &Check::default());
}

#[test]
fn padding_round_trips() {
    for truncate in [true, false] {
        let g = graph(&format!("to_padded_{truncate}"), truncate, |b, s| {
            let x = b.input("x", f64j(s, &[2]));
            let d = b.to_padded(x);
            let e = b.exp(d);
            b.output("d", e);
        });
        check_gradients(&g, &["x"], &Check::default());
        let g = graph(&format!("from_padded_{truncate}"), truncate, |b, s| {
            let d = b.input("d", f64d(&[Dim::Batch, Dim::MaxLen], &[2]));
            let x = b.from_padded(d, s);
            let y = b.tanh(x);
            b.output("x", y);
        });
        check_gradients(&g, &["d"], &Check::default());
    }
}

#[test]
fn unused_inputs_get_zero_gradients_and_outputs_fan_out() {
    let g = graph("fan_out", true, |b, s| {
        let x = b.input("x", f64j(s, &[2]));
        let _unused = b.input("u", f64d(&[Dim::Batch], &[2]));
        let y = b.exp(x);
        let z = b.mul(x, x);
        b.output("y", y);
        b.output("z", z);
        b.output("y_again", y);
    });
    check_gradients(&g, &["x", "u"], &Check::default());
    let bwd = backward(&g, &["u"]).expect("backward");
    assert_eq!(bwd.outputs().len(), 1);
    let names: Vec<&str> = bwd.inputs().map(|(_, n, _)| n).collect();
    assert_eq!(
        names,
        ["offsets", "x", "u", "grad_y", "grad_z", "grad_y_again"]
    );
}

// ---- builtin ops ----

fn jspec(inner: &[usize]) -> JaggedSpec {
    JaggedSpec {
        dtype: DType::F64,
        offsets: DType::I32,
        inner: inner.to_vec(),
    }
}

#[test]
fn builtin_primitives() {
    let g = ops::jagged_softmax(&jspec(&[2])).expect("graph");
    check_gradients(&g, &["values"], &Check::default());
    for op in REDUCES {
        let g = ops::jagged_reduce(&jspec(&[3]), op).expect("graph");
        check_gradients(&g, &["values"], &Check::default());
    }
    let g = ops::jagged_to_padded_dense(&jspec(&[2])).expect("graph");
    let check = Check {
        attrs: vec![("padding_value", AttrValue::Float(-3.0))],
        ..Check::default()
    };
    check_gradients(&g, &["values"], &check);
    let g = ops::dense_to_jagged(&jspec(&[2])).expect("graph");
    check_gradients(&g, &["dense"], &Check::default());
    let g = ops::jagged_dense_elementwise_mul(&jspec(&[2])).expect("graph");
    check_gradients(&g, &["values", "dense"], &Check::default());
}

#[test]
fn builtin_flash_attention() {
    for activation in [Activation::Softmax, Activation::Silu] {
        for causal in [false, true] {
            let spec = AttentionSpec {
                input_dtype: DType::F64,
                dtype: DType::F64,
                offsets: DType::I32,
                heads: 2,
                head_dim: 3,
                value_dim: 2,
                causal,
                activation,
            };
            let g = ops::jagged_flash_attention(&spec).expect("graph");
            let check = Check {
                only: Some(vec!["out"]),
                max_len: 4,
                seed: 3,
                ..Check::default()
            };
            check_gradients(&g, &["q", "k", "v"], &check);
            if activation == Activation::Softmax {
                // lse is returned in f32: the finite differences see its
                // rounding, hence a larger step and tolerance.
                let check = Check {
                    only: Some(vec!["lse"]),
                    step: 1e-3,
                    rtol: 1e-3,
                    atol: 1e-3,
                    ..check
                };
                check_gradients(&g, &["q", "k"], &check);
            }
        }
    }
}

#[test]
fn builtin_fbgemm_attention() {
    for use_mask in [false, true] {
        let spec = FbgemmAttentionSpec {
            input_dtype: DType::F64,
            dtype: DType::F64,
            offsets: DType::I64,
            head_dim: 3,
            use_mask,
        };
        let g = ops::fbgemm_jagged_flash_attention_basic(&spec).expect("graph");
        check_gradients(&g, &["q", "k", "v"], &Check::default());
    }
}

// ---- typed errors ----

fn not_differentiable(graph: &Graph, wrt: &[&str], op: &str) {
    match backward(graph, wrt) {
        Err(AutodiffError::NotDifferentiable { node, reason }) => {
            assert!(node.contains(op), "{node}: {reason}");
        }
        other => panic!(
            "{}: expected NotDifferentiable, got {other:?}",
            graph.name()
        ),
    }
}

#[test]
fn inputs_that_have_no_gradient_are_typed_errors() {
    let g = ops::jagged_softmax(&jspec(&[2])).expect("graph");
    assert_eq!(
        backward(&g, &["offsets"]),
        Err(AutodiffError::NotFloat {
            name: "offsets".into(),
            dtype: DType::I32
        })
    );
    assert_eq!(
        backward(&g, &["nope"]),
        Err(AutodiffError::UnknownInput {
            name: "nope".into()
        })
    );
    assert_eq!(
        backward(&g, &["values", "values"]),
        Err(AutodiffError::DuplicateInput {
            name: "values".into()
        })
    );
    let g = graph("clash", true, |b, s| {
        let x = b.input("x", f64j(s, &[2]));
        let _ = b.input("grad_y", f64j(s, &[2]));
        b.output("y", x);
    });
    assert_eq!(
        backward(&g, &["x"]),
        Err(AutodiffError::NameClash {
            name: "grad_y".into()
        })
    );
}

#[test]
fn nodes_without_an_expressible_adjoint_are_typed_errors() {
    // gather: the adjoint is a scatter-add.
    let g = graph("gather", true, |b, s| {
        let x = b.input("x", f64j(s, &[]));
        let table = b.input("table", f64d(&[], &[5]));
        let idx = b.input("idx", TensorType::jagged(DType::I32, s, &[]));
        let bias = b.gather(table, idx);
        let y = b.add(x, bias);
        b.output("y", y);
    });
    not_differentiable(&g, &["table"], "gather");
    // ... but a gathered constant table is fine.
    check_gradients(&g, &["x"], &Check::default());
    // topk values: the adjoint puts each back at its index; its indices
    // pick a weight and pass it no gradient.
    let g = graph("topk", true, |b, s| {
        let x = b.input("x", f64j(s, &[4]));
        let v = b.top_k(RankOrder::Descending, TopKPart::Values, x, 1, 2);
        b.output("v", v);
    });
    not_differentiable(&g, &["x"], "topk");
    let g = graph("topk_index", true, |b, s| {
        let x = b.input("x", f64j(s, &[4]));
        let w = b.input("w", f64d(&[], &[4]));
        let i = b.top_k(RankOrder::Ascending, TopKPart::Indices, x, 1, 1);
        let picked = b.gather(w, i);
        let picked = b.reduce(ReduceOp::Sum, picked, 1);
        let total = b.reduce(ReduceOp::Sum, x, 1);
        let y = b.mul(total, picked);
        b.output("y", y);
    });
    check_gradients(&g, &["x"], &Check::default());
    // compact: the adjoint is an expansion.
    let g = ops::masked_select_jagged(&jspec(&[2]), DType::Bool).expect("graph");
    not_differentiable(&g, &["values"], "compact");
    // An unbatched value broadcast over the batch: a sum over B.
    let g = graph("bias", true, |b, s| {
        let x = b.input("x", f64j(s, &[3]));
        let w = b.input("w", f64d(&[], &[3]));
        let y = b.add(x, w);
        b.output("y", y);
    });
    not_differentiable(&g, &["w"], "add");
    check_gradients(&g, &["x"], &Check::default());
    // A scan along B.
    let g = graph("scan_b", true, |b, _| {
        let x = b.input("x", f64d(&[Dim::Batch], &[2]));
        let y = b.scan(ScanMode::Inclusive, x, 0);
        b.output("y", y);
    });
    not_differentiable(&g, &["x"], "scan");
    // A reduction along the first of two N axes: its adjoint would spread
    // along an axis that is neither the last row axis nor a contraction's.
    let g = graph("reduce_first_n", true, |b, _| {
        let x = b.input("x", f64d(&[Dim::Batch, Dim::MaxLen, Dim::MaxLen], &[]));
        let y = b.reduce(ReduceOp::Sum, x, 1);
        b.output("y", y);
    });
    not_differentiable(&g, &["x"], "reduce");
    // A padded [B, N, N] operand meeting [%s, %s]: padding pairs back.
    let g = graph("padded_pairs", true, |b, s| {
        let p = pair(b, s);
        let d = b.input("d", f64d(&[Dim::Batch, Dim::MaxLen, Dim::MaxLen], &[]));
        let y = b.mul(p, d);
        let y = b.reduce(ReduceOp::Sum, y, 1);
        b.output("y", y);
    });
    not_differentiable(&g, &["d"], "mul");
    check_gradients(&g, &["q", "k"], &Check::default());
}

#[test]
fn low_precision_graphs_differentiate() {
    // f16 attention: casts and f32 accumulation carry the gradient; the
    // backward graph in f16 agrees with the f64 one to f16's precision.
    let spec = |dtype| AttentionSpec {
        input_dtype: dtype,
        dtype,
        offsets: DType::I32,
        heads: 2,
        head_dim: 4,
        value_dim: 3,
        causal: true,
        activation: Activation::Softmax,
    };
    let low = ops::jagged_flash_attention(&spec(DType::F16)).expect("graph");
    let high = ops::jagged_flash_attention(&spec(DType::F64)).expect("graph");
    let (bl, bh) = (
        backward(&low, &["q", "k", "v"]).expect("f16 backward"),
        backward(&high, &["q", "k", "v"]).expect("f64 backward"),
    );
    let check = Check::default();
    let mut rng = Rng(5);
    let lens = [3, 0, 5, 1];
    let mut inputs = random_inputs(&bl, &lens, &check, &mut rng);
    let attrs = attrs_of(&low, &check);
    let out_l = run(&bl, &inputs, &attrs);
    for t in inputs.values_mut() {
        if t.dtype() == DType::F16 {
            *t = DenseTensor::from_f64(DType::F64, t.shape().to_vec(), &t.to_f64()).expect("t");
        }
    }
    let grad_lse = &inputs["grad_lse"];
    assert_eq!(grad_lse.dtype(), DType::F32);
    let out_h = run(&bh, &inputs, &attrs);
    for name in ["grad_q", "grad_k", "grad_v"] {
        let (l, h) = (out_l[name].to_f64(), out_h[name].to_f64());
        assert_eq!(out_l[name].dtype(), DType::F16);
        let diff: f64 = l.iter().zip(&h).map(|(a, b)| (a - b) * (a - b)).sum();
        let norm: f64 = h.iter().map(|b| b * b).sum();
        assert!(norm > 0.0 && diff.sqrt() <= 1e-2 * norm.sqrt(), "{name}");
    }
}

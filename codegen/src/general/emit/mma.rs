//! Contractions on tensor cores: `mma.sync.m16n8k16` with f16 / bf16
//! operands and f32 accumulators, whatever the letters and roles of the
//! contraction's axes.
//!
//! The output letters found in one operand only form the rows `M` (that
//! operand is the A side) and the columns `N` (the other operand, the B
//! side); the letters found in both operands and the output are batch
//! letters; the summed letters form `K`. Each group is flattened (last
//! letter fastest), so `x[ihd] . w[hde] -> ihe` is a batch of `h` products of
//! `[n_b, d] x [d, e]`, and `x[id] . y[ie] -> de` (jagged x jagged, summed
//! over the sequence) is `[d, n_b] x [n_b, e]` per sequence.
//!
//! A warp owns a `16 x 8 nt` output tile. Each lane evaluates the operand
//! elements of its own fragments with [`Emitter::value`], so operand
//! prologues (casts, scales, masks, gathers) stay fused; elements outside
//! `M`, `N` or `K` are zeros. The accumulators then go through the step's
//! epilogue: the elementwise chain from the contraction to the output
//! (bias, activation, cast), evaluated with the contraction's value taken
//! from the accumulator.

use std::collections::HashMap;
use std::fmt;

use jagged_ir::{BinaryOp, Dim, Graph, Handle, Node, Precision, TensorType, UnaryOp};

use super::{At, Emitter, Result, Val};
use crate::general::{
    Partition, Stored, output_through_elementwise_chain, tensor_type, unsupported,
};
use crate::kernel::{Address, BinOp, Cmp, Inst, Operand, Reg, Space, TernOp, Type};
use crate::launch::SizeExpr;
use crate::spec::DType;
use crate::templates::pack_f32;

/// Threads per CTA of a tensor-core kernel: four warps.
pub(super) const BLOCK_THREADS: u32 = 128;
/// The CTAs per SM ptxas is told to fit (`.minnctapersm`): up to 128
/// registers a thread. Without it ptxas holds these kernels to 56 or 64
/// registers for occupancy and spills the fragment evaluation (seen with
/// ptxas 12.9 on sm_90a).
const MIN_CTAS_PER_SM: u32 = 4;
/// Output columns per `mma` (the `n8` of `m16n8k16`).
const N_MMA: u64 = 8;
/// Most `m16n8` tiles a warp accumulates side by side (sharing its A fragments).
const MAX_N_TILES: u64 = 4;

/// The operands' type on the tensor cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MmaInputs {
    /// f16 or bf16 (`m16n8k16`; two elements per 32-bit register).
    Half(DType),
    /// f32 rounded to tf32 (`m16n8k8`; one element per register), for a
    /// contraction of [`Precision::Tf32`].
    Tf32,
}

impl MmaInputs {
    /// The PTX type of the `mma`'s A and B.
    fn ptx(self) -> Type {
        match self {
            MmaInputs::Half(DType::F16) => Type::F16,
            MmaInputs::Half(_) => Type::Bf16,
            MmaInputs::Tf32 => Type::Tf32,
        }
    }

    /// The `k` of `m16n8k`.
    fn k(self) -> u64 {
        match self {
            MmaInputs::Half(_) => 16,
            MmaInputs::Tf32 => 8,
        }
    }

    /// This lane's `K` offsets in a k-step, per fragment register, relative
    /// to `2c` (half: `2c, 2c+1 | 2c+8, 2c+9`) or `c` (tf32: `c | c+4`).
    fn k_offsets(self) -> &'static [&'static [i64]] {
        match self {
            MmaInputs::Half(_) => &[&[0, 1], &[8, 9]],
            MmaInputs::Tf32 => &[&[0], &[4]],
        }
    }
}

/// How a contraction maps onto `mma` tiles.
pub(super) struct MmaPlan {
    /// The contraction.
    contract: Handle<Node>,
    /// Element type of both operands on the tensor cores.
    ab: MmaInputs,
    /// The A operand and its axis letters (rows `M` x `K`).
    a: (Handle<Node>, String),
    /// The B operand and its axis letters (`K` x columns `N`).
    bside: (Handle<Node>, String),
    /// The output letters.
    out: String,
    /// Row letters, in output order.
    m: Vec<char>,
    /// Column letters, in output order (static extents).
    n: Vec<char>,
    /// Batch letters, in output order (static extents).
    batch: Vec<char>,
    /// Summed letters, in the A operand's order.
    k: Vec<char>,
    /// The dim each letter ranges over.
    dims: HashMap<char, Dim>,
}

/// The letters of an operand's non-batch dims, paired with the dims.
fn named_dims(x: &TensorType, axes: &str) -> Vec<(char, Dim)> {
    let named = if x.dims.first() == Some(&Dim::Batch) {
        &x.dims[1..]
    } else {
        &x.dims[..]
    };
    axes.chars().zip(named.iter().copied()).collect()
}

fn static_extent(d: Dim) -> Option<u64> {
    match d {
        Dim::Static(n) => Some(n as u64),
        _ => None,
    }
}

/// Whether every element of `h` is a value of `ab` exactly, so that
/// handing it to the tensor cores as `ab` rounds nothing: an input or
/// attribute of that dtype, a cast to it, and what only moves, zeros,
/// negates or picks among such values. (The reference does not round
/// intermediates: `x * scale` typed f16 is not exact, and takes the SIMT
/// loop.)
fn exact_in(graph: &Graph, h: Handle<Node>, ab: DType) -> bool {
    let typed = |x: Handle<Node>| matches!(tensor_type(graph, x), Ok(t) if t.dtype == ab);
    match graph.node(h) {
        Node::Input { .. } | Node::Const { .. } | Node::Attr { .. } | Node::Cast { .. } => typed(h),
        Node::Position { .. } => typed(h),
        Node::Unary { op, arg } => {
            matches!(op, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu) && exact_in(graph, *arg, ab)
        }
        Node::Binary { op, lhs, rhs } => {
            matches!(op, BinaryOp::Max | BinaryOp::Min)
                && exact_in(graph, *lhs, ab)
                && exact_in(graph, *rhs, ab)
        }
        Node::Select {
            on_true, on_false, ..
        } => exact_in(graph, *on_true, ab) && exact_in(graph, *on_false, ab),
        Node::ToPadded { arg } | Node::FromPadded { arg, .. } | Node::Compact { arg, .. } => {
            exact_in(graph, *arg, ab)
        }
        Node::Gather { table, .. } => exact_in(graph, *table, ab),
        Node::Shift { arg, .. } | Node::Take { arg, .. } | Node::Reshape { arg, .. } => {
            exact_in(graph, *arg, ab)
        }
        _ => false,
    }
}

/// What the tensor cores would multiply for the contraction `contract`:
/// f16 or bf16 operands exact in that dtype ([`exact_in`]), or f32 ones
/// the author rounds to tf32; `None` when its operands are for the SIMT
/// loop whatever its axes.
fn mma_inputs(graph: &Graph, contract: Handle<Node>) -> Option<MmaInputs> {
    let Node::Contract {
        lhs,
        rhs,
        precision,
        ..
    } = graph.node(contract)
    else {
        return None;
    };
    let (lt, rt) = (
        tensor_type(graph, *lhs).ok()?,
        tensor_type(graph, *rhs).ok()?,
    );
    match (lt.dtype, rt.dtype, precision) {
        (DType::F32, DType::F32, Precision::Tf32) => Some(MmaInputs::Tf32),
        (DType::F16, DType::F16, _) | (DType::BF16, DType::BF16, _) => {
            let half = lt.dtype;
            (exact_in(graph, *lhs, half) && exact_in(graph, *rhs, half))
                .then_some(MmaInputs::Half(half))
        }
        _ => None,
    }
}

/// Whether the contraction `h` has operands for the tensor cores.
pub(in crate::general) fn tensor_core_operands(graph: &Graph, h: Handle<Node>) -> bool {
    mma_inputs(graph, h).is_some()
}

/// The contraction a step rooted at `root` computes on tensor cores, if it
/// does: `root` itself, or the contraction at the start of `root`'s
/// elementwise chain; f16 or bf16 operands on both sides, exact in that
/// dtype ([`exact_in`]); a summed letter;
/// row and column letters on opposite sides; static columns and batch.
pub(super) fn plan(graph: &Graph, part: &Partition, root: Handle<Node>) -> Option<MmaPlan> {
    let contract = match graph.node(root) {
        Node::Contract { .. } => root,
        _ => graph
            .nodes()
            .iter()
            .map(|(h, _)| h)
            .filter(|&h| matches!(graph.node(h), Node::Contract { .. }))
            .find(|&h| {
                !part.stored.contains_key(&h)
                    && output_through_elementwise_chain(graph, h) == Some(root)
            })?,
    };
    let Node::Contract {
        lhs,
        lhs_axes,
        rhs,
        rhs_axes,
        out_axes,
        ..
    } = graph.node(contract)
    else {
        return None;
    };
    let ab = mma_inputs(graph, contract)?;
    let (lt, rt) = (
        tensor_type(graph, *lhs).ok()?,
        tensor_type(graph, *rhs).ok()?,
    );
    let (ln, rn) = (named_dims(lt, lhs_axes), named_dims(rt, rhs_axes));
    let mut dims = HashMap::new();
    for &(c, d) in ln.iter().chain(&rn) {
        dims.insert(c, d);
    }
    let in_l = |c: char| lhs_axes.contains(c);
    let in_r = |c: char| rhs_axes.contains(c);
    let out: Vec<char> = out_axes.chars().collect();
    let batch: Vec<char> = out
        .iter()
        .copied()
        .filter(|&c| in_l(c) && in_r(c))
        .collect();
    let only_l: Vec<char> = out
        .iter()
        .copied()
        .filter(|&c| in_l(c) && !in_r(c))
        .collect();
    let only_r: Vec<char> = out
        .iter()
        .copied()
        .filter(|&c| in_r(c) && !in_l(c))
        .collect();
    let summed: Vec<char> = ln
        .iter()
        .map(|&(c, _)| c)
        .filter(|c| !out.contains(c))
        .collect();
    // A letter summed on one side only is a plain sum, not a product.
    let one_sided = rn.iter().any(|&(c, _)| !out.contains(&c) && !in_l(c));
    if summed.is_empty() || one_sided || only_l.is_empty() || only_r.is_empty() {
        return None;
    }
    let is_static = |cs: &[char]| cs.iter().all(|c| static_extent(dims[c]).is_some());
    if !is_static(&batch) {
        return None;
    }
    // Any dynamic output letter (a sequence's rows) goes to the rows.
    let (a, bside, m, n) = if is_static(&only_r) {
        (
            (*lhs, lhs_axes.clone()),
            (*rhs, rhs_axes.clone()),
            only_l,
            only_r,
        )
    } else if is_static(&only_l) {
        (
            (*rhs, rhs_axes.clone()),
            (*lhs, lhs_axes.clone()),
            only_r,
            only_l,
        )
    } else {
        return None;
    };
    let k: Vec<char> = a.1.chars().filter(|c| summed.contains(c)).collect();
    Some(MmaPlan {
        contract,
        ab,
        a,
        bside,
        out: out_axes.clone(),
        m,
        n,
        batch,
        k,
        dims,
    })
}

impl fmt::Display for MmaPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letters = |cs: &[char]| cs.iter().collect::<String>();
        write!(
            f,
            "tensor cores: mma.m16n8k{}.{} of {}, rows [{}] x columns [{}] summed over [{}]",
            self.ab.k(),
            self.ab.ptx(),
            self.contract,
            letters(&self.m),
            letters(&self.n),
            letters(&self.k)
        )?;
        if !self.batch.is_empty() {
            write!(f, ", batch [{}]", letters(&self.batch))?;
        }
        Ok(())
    }
}

impl MmaPlan {
    fn static_product(&self, letters: &[char]) -> u64 {
        letters
            .iter()
            .map(|c| static_extent(self.dims[c]).unwrap_or(1))
            .product()
    }

    /// Whether the rows have a run-time extent.
    fn dynamic_rows(&self) -> bool {
        self.m.iter().any(|c| static_extent(self.dims[c]).is_none())
    }

    /// `m16n8` tiles per warp side by side.
    fn n_tiles(&self) -> u64 {
        self.static_product(&self.n)
            .div_ceil(N_MMA)
            .clamp(1, MAX_N_TILES)
    }
}

impl Emitter<'_> {
    /// The kernel of a step rooted at `root` whose contraction runs on
    /// tensor cores (see [`plan`]), storing `root` into `into`.
    pub(super) fn mma_elements(
        &mut self,
        plan: &MmaPlan,
        root: Handle<Node>,
        into: Stored,
        max_len_bucket: u32,
    ) -> Result<()> {
        let graph = self.graph;
        let r = tensor_type(graph, root)?.clone();
        let per_sequence = r.dims.first() == Some(&Dim::Batch) || r.seqs().is_some();
        let nt = plan.n_tiles();
        let n_total = plan.static_product(&plan.n);
        let col_tiles = n_total.div_ceil(N_MMA * nt);
        let batch_total = plan.static_product(&plan.batch);
        // Warps per (sequence, batch, column tile), each taking every
        // `slots`-th row tile: as many as the rows of the max-length bucket
        // need (a constant, so that splitting the work index divides by
        // constants only; longer untruncated sequences loop).
        let slots = if plan.dynamic_rows() {
            (u64::from(max_len_bucket) / 16).max(1)
        } else {
            plan.static_product(&plan.m).div_ceil(16)
        };
        let outer = if per_sequence {
            SizeExpr::Batch
        } else {
            SizeExpr::Const(1)
        };
        let warps_total = outer.clone() * SizeExpr::Const(batch_total * col_tiles * slots);
        self.items = warps_total.clone() * SizeExpr::Const(32);

        self.b.set_min_ctas_per_sm(MIN_CTAS_PER_SM);
        let (thread, threads) = self.b.global_thread_index();
        let lane = self
            .b
            .binary(BinOp::And, Type::U64, thread, Operand::Int(31));
        let g = self.b.binary(BinOp::Shr, Type::U64, lane, Operand::Int(2));
        let c = self.b.binary(BinOp::And, Type::U64, lane, Operand::Int(3));
        let c2 = self.b.binary(BinOp::Shl, Type::U64, c, Operand::Int(1));
        // This lane's first K offset in a k-step.
        let k_lane = match plan.ab {
            MmaInputs::Half(_) => c2,
            MmaInputs::Tf32 => c,
        };
        let warp = self
            .b
            .binary(BinOp::Shr, Type::U64, thread, Operand::Int(5));
        let warps = self
            .b
            .binary(BinOp::Shr, Type::U64, threads, Operand::Int(5));
        let work = self.size(warps_total);
        let items = self.b.begin_range(Type::U64, warp, work, warps);
        let outer_n: Operand = self.size(outer).into();
        let slots_n = Operand::Int(slots as i64);
        let w = self.digits(
            items.counter,
            &[
                outer_n,
                Operand::Int(batch_total as i64),
                slots_n,
                Operand::Int(col_tiles as i64),
            ],
        );
        let (b, batch_index, slot, col_tile) = (w[0], w[1], w[2], w[3]);
        let b = if per_sequence {
            self.enter_sequence(b)?;
            b
        } else {
            self.b.mov(Type::U64, Operand::Int(0))
        };
        let mut letter: HashMap<char, Reg> = HashMap::new();
        let batch_extents = self.extents(plan, &plan.batch, b)?;
        let batch_digits = self.digits(batch_index, &batch_extents);
        letter.extend(plan.batch.iter().copied().zip(batch_digits));
        let m_extents = self.extents(plan, &plan.m, b)?;
        let m_total = self.product(&m_extents);
        let k_extents = self.extents(plan, &plan.k, b)?;
        let k_total = self.product(&k_extents);
        let n_extents = self.extents(plan, &plan.n, b)?;

        // This lane's columns: 2 c .. 2 c + 1 of each accumulator tile for
        // the epilogue, g of each tile for the B fragments.
        let col0 = self.b.binary(
            BinOp::Mul,
            Type::U64,
            col_tile,
            Operand::Int((N_MMA * nt) as i64),
        );
        let mut b_cols = Vec::new();
        for t in 0..nt {
            let n = self.b.binary(BinOp::Add, Type::U64, col0, g);
            let n = self
                .b
                .binary(BinOp::Add, Type::U64, n, Operand::Int((N_MMA * t) as i64));
            let ok = self
                .b
                .setp(Cmp::Lt, Type::U64, n, Operand::Int(n_total as i64));
            b_cols.push((self.digits(n, &n_extents), ok));
        }

        let row_tiles = self
            .b
            .binary(BinOp::Add, Type::U64, m_total, Operand::Int(15));
        let row_tiles = self
            .b
            .binary(BinOp::Shr, Type::U64, row_tiles, Operand::Int(4));
        let tiles = self.b.begin_range(Type::U64, slot, row_tiles, slots_n);
        let row0 = self
            .b
            .binary(BinOp::Shl, Type::U64, tiles.counter, Operand::Int(4));
        let mut a_rows = Vec::new();
        for half in [0, 8] {
            let m = self.b.binary(BinOp::Add, Type::U64, row0, g);
            let m = self.b.binary(BinOp::Add, Type::U64, m, Operand::Int(half));
            let ok = self.b.setp(Cmp::Lt, Type::U64, m, m_total);
            a_rows.push((self.digits(m, &m_extents), ok));
        }
        let acc: Vec<[Reg; 4]> = (0..nt)
            .map(|_| std::array::from_fn(|_| self.b.const_f32(0.0)))
            .collect();

        let steps = self.b.begin_range(
            Type::U64,
            Operand::Int(0),
            k_total,
            Operand::Int(plan.ab.k() as i64),
        );
        // The K offsets of this lane's elements, per fragment register.
        let mut ks: Vec<Vec<(Vec<Reg>, Reg)>> = Vec::new();
        for offsets in plan.ab.k_offsets() {
            let mut register = Vec::new();
            for &dk in *offsets {
                let k = self.b.binary(BinOp::Add, Type::U64, steps.counter, k_lane);
                let k = self.b.binary(BinOp::Add, Type::U64, k, Operand::Int(dk));
                let ok = self.b.setp(Cmp::Lt, Type::U64, k, k_total);
                register.push((self.digits(k, &k_extents), ok));
            }
            ks.push(register);
        }
        // A (16 x k, row-major): a0 = (g, first K offsets), a1 = (g+8, first),
        // a2 = (g, second), a3 = (g+8, second).
        let a_pairs = self.pair_loads(plan, &plan.a);
        let mut a_frag = Vec::new();
        for (kreg, row) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let (mdig, mok) = (&a_rows[row].0, a_rows[row].1);
            let reg = self.fragment_register(
                plan,
                &plan.a,
                a_pairs,
                b,
                &letter,
                (mdig, &plan.m, mok),
                &ks[kreg],
            )?;
            a_frag.push(reg);
        }
        let b_pairs = self.pair_loads(plan, &plan.bside);
        for (t, (ndig, nok)) in b_cols.iter().enumerate() {
            // B (k x 8, column-major): b0 = (first K offsets, g), b1 = (second, g).
            let mut b_frag = Vec::new();
            for register in &ks {
                let reg = self.fragment_register(
                    plan,
                    &plan.bside,
                    b_pairs,
                    b,
                    &letter,
                    (ndig, &plan.n, *nok),
                    register,
                )?;
                b_frag.push(reg);
            }
            self.b.push(Inst::Mma {
                ab: plan.ab.ptx(),
                d: acc[t],
                a: [a_frag[0], a_frag[1], a_frag[2], a_frag[3]],
                b: [b_frag[0], b_frag[1]],
                c: acc[t],
            });
        }
        self.b.end_range(steps);

        // Epilogue: accumulator (row g + 8 h, columns 2c + j) of each tile.
        for (t, tile) in acc.iter().enumerate() {
            for (h, row) in a_rows.iter().enumerate() {
                for j in 0..2u64 {
                    let n = self.b.ternary(
                        TernOp::MadLo,
                        Type::U64,
                        col_tile,
                        Operand::Int((N_MMA * nt) as i64),
                        c2,
                    );
                    let n = self.b.binary(
                        BinOp::Add,
                        Type::U64,
                        n,
                        Operand::Int((N_MMA * t as u64 + j) as i64),
                    );
                    let nok = self
                        .b
                        .setp(Cmp::Lt, Type::U64, n, Operand::Int(n_total as i64));
                    let ok = self.b.binary(BinOp::And, Type::Pred, row.1, nok);
                    let skip = self.b.label();
                    self.b.bra_if(ok, true, skip);
                    let ndig = self.digits(n, &n_extents);
                    let mut at_letter = letter.clone();
                    at_letter.extend(plan.m.iter().copied().zip(row.0.iter().copied()));
                    at_letter.extend(plan.n.iter().copied().zip(ndig));
                    let lead = usize::from(r.dims.first() == Some(&Dim::Batch));
                    let mut idx = Vec::with_capacity(r.dims.len());
                    if lead == 1 {
                        idx.push(b);
                    }
                    idx.extend(plan.out.chars().map(|c| at_letter[&c]));
                    let at = At { b, idx };
                    let value = Val::F(tile[2 * h + j as usize]);
                    let v = if root == plan.contract {
                        value
                    } else {
                        self.known.push((plan.contract, value));
                        let v = self.define(root, &at);
                        self.known.pop();
                        v?
                    };
                    let lin = self.linear(&r, &at)?;
                    self.store(into, lin, v);
                    self.b.place(skip);
                }
            }
        }
        self.b.end_range(tiles);
        if let Some(s) = r.seqs() {
            self.zero_truncated_rows(&r, s, b, lane, into, [batch_index, slot, col_tile])?;
        }
        self.memo = None;
        self.b.end_range(items);
        Ok(())
    }

    /// The extents of `letters` in sequence `b`.
    fn extents(&mut self, plan: &MmaPlan, letters: &[char], b: Reg) -> Result<Vec<Operand>> {
        letters
            .iter()
            .map(|c| self.extent(plan.dims[c], b))
            .collect()
    }

    /// The product of `extents` (u64 register).
    fn product(&mut self, extents: &[Operand]) -> Reg {
        let mut p = self.b.mov(Type::U64, Operand::Int(1));
        for &e in extents {
            p = self.b.binary(BinOp::Mul, Type::U64, p, e);
        }
        p
    }

    /// Whether the two elements of each fragment register of operand `x`
    /// (`k` and `k + 1`, `k` even) are adjacent in a buffer of the mma dtype,
    /// 4-byte aligned: `x` is stored in that dtype and `K` is one letter, its
    /// last axis, of even static extent. Then one 32-bit load fills the
    /// register, with no conversion.
    fn pair_loads(&self, plan: &MmaPlan, x: &(Handle<Node>, String)) -> bool {
        let MmaInputs::Half(half) = plan.ab else {
            return false;
        };
        let stored = self.part.stored.get(&x.0).is_some_and(|st| st.elem == half);
        let [k] = plan.k[..] else {
            return false;
        };
        let even = static_extent(plan.dims[&k]).is_some_and(|n| n % 2 == 0);
        stored && even && x.1.ends_with(k)
    }

    /// One fragment register of operand `x`: its elements at the row (or
    /// column) `line` (digits, letters, in-range predicate) and the `K`
    /// offsets `ks` (digits, in-range predicate; two halves packed low to
    /// high, or one tf32); zeros out of range.
    #[allow(clippy::too_many_arguments)]
    fn fragment_register(
        &mut self,
        plan: &MmaPlan,
        x: &(Handle<Node>, String),
        pair_loads: bool,
        b: Reg,
        letter: &HashMap<char, Reg>,
        line: (&[Reg], &[char], Reg),
        ks: &[(Vec<Reg>, Reg)],
    ) -> Result<Reg> {
        let (digits, letters, line_ok) = line;
        if pair_loads {
            // `k` even and `K` even: `k < K` covers `k + 1`.
            let ok = self.b.binary(BinOp::And, Type::Pred, line_ok, ks[0].1);
            let groups = [(digits, letters), (&ks[0].0[..], &plan.k[..])];
            let at = self.operand_index(x, b, letter, &groups)?;
            let ty = tensor_type(self.graph, x.0)?.clone();
            let st = self.part.stored[&x.0];
            let lin = self.linear(&ty, &at)?;
            let base = self.ptr(st.buffer);
            let addr = self.b.element_addr(base, lin, 2);
            let dst = self.b.mov(Type::B32, Operand::Int(0));
            let skip = self.b.label();
            self.b.bra_if(ok, true, skip);
            let word = self.b.ld(
                Space::Global,
                Type::B32,
                1,
                Address {
                    base: addr,
                    offset: 0,
                },
            )[0];
            self.b.mov_to(Type::B32, dst, word);
            self.b.place(skip);
            return Ok(dst);
        }
        let mut vals = Vec::with_capacity(ks.len());
        for (kdig, kok) in ks {
            let ok = self.b.binary(BinOp::And, Type::Pred, line_ok, *kok);
            let groups = [(digits, letters), (&kdig[..], &plan.k[..])];
            let at = self.operand_index(x, b, letter, &groups)?;
            match self.guarded(x.0, &at, ok, false)? {
                Val::F(r) | Val::I(r) => vals.push(r),
            }
        }
        Ok(match plan.ab {
            MmaInputs::Half(half) => pack_f32(&mut self.b, half, &vals)[0],
            MmaInputs::Tf32 => self.b.cvt(Type::Tf32, Type::F32, vals[0]),
        })
    }

    /// The index of operand `x` (with axis letters `x.1`) at the element
    /// whose letters are given by `letter` and `groups` (digit registers per
    /// letter group).
    fn operand_index(
        &mut self,
        x: &(Handle<Node>, String),
        b: Reg,
        letter: &HashMap<char, Reg>,
        groups: &[(&[Reg], &[char])],
    ) -> Result<At> {
        let ty = tensor_type(self.graph, x.0)?;
        let mut idx = Vec::with_capacity(ty.dims.len());
        if ty.dims.first() == Some(&Dim::Batch) {
            idx.push(b);
        }
        for c in x.1.chars() {
            let reg = letter.get(&c).copied().or_else(|| {
                groups.iter().find_map(|(digits, letters)| {
                    letters.iter().position(|&l| l == c).map(|k| digits[k])
                })
            });
            idx.push(reg.ok_or_else(|| {
                unsupported(
                    self.graph,
                    x.0,
                    &format!("contraction letter `{c}` has no index in the mma tile"),
                )
            })?);
        }
        Ok(At { b, idx })
    }

    /// Zeros the stored rows `n_b <= i < L_b` of a truncated jagged result
    /// (one warp per sequence: the one whose other work digits are 0).
    fn zero_truncated_rows(
        &mut self,
        r: &TensorType,
        s: Handle<Node>,
        b: Reg,
        lane: Reg,
        into: Stored,
        others: [Reg; 3],
    ) -> Result<()> {
        if !matches!(self.graph.node(s), Node::Seqs { truncate: true, .. }) {
            return Ok(());
        }
        let skip = self.b.label();
        for d in others {
            let nonzero = self.b.setp(Cmp::Ne, Type::U64, d, Operand::Int(0));
            self.b.bra_if(nonzero, false, skip);
        }
        let width = crate::general::static_product(&r.dims[1..]);
        let first = self.seq_start(s, b)?;
        let next = self.b.binary(BinOp::Add, Type::U64, b, Operand::Int(1));
        let end = self.seq_start(s, next)?;
        let len = self.seq_len(s, b)?;
        let kept_end = self.b.binary(BinOp::Add, Type::U64, first, len);
        let from = self
            .b
            .binary(BinOp::Mul, Type::U64, kept_end, Operand::Int(width as i64));
        let to = self
            .b
            .binary(BinOp::Mul, Type::U64, end, Operand::Int(width as i64));
        let start = self.b.binary(BinOp::Add, Type::U64, from, lane);
        let range = self.b.begin_range(Type::U64, start, to, Operand::Int(32));
        let z = self.zero(into.elem);
        self.store_always(into, range.counter, z);
        self.b.end_range(range);
        self.b.place(skip);
        Ok(())
    }
}

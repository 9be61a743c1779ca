//! The typing rules of the IR and of the DSL built on it, in one place.
//!
//! The validator ([`validate`](crate::validate)) checks every node's dtypes
//! with the rules here ([`unary_rule`], [`binary_rule`], [`reduce_rule`], ...),
//! and the `#[jagged_kernel]` macro checks a kernel body with the same
//! functions: its method and function lists, their arities and the dtypes
//! each accepts come from [`METHODS`] and [`FUNCTIONS`], whose rules are the
//! validator's. So a body the macro accepts builds a graph the validator
//! accepts, and a dtype the validator rejects is a compile error at the
//! method call. The phantom types of `jagged::dsl` are tested against these
//! tables (`tests/typing_agreement.rs` of the `jagged` crate, and the
//! agreement test of the macro crate).

use crate::dtype::DType;
use crate::graph::{BinaryOp, CompareOp, ReduceOp, UnaryOp};

/// A class of dtypes that an operand may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DtypeRule {
    /// Any dtype.
    Any,
    /// Any dtype but `bool` (arithmetic is defined).
    Numeric,
    /// A floating-point dtype (`f64`, `f32`, `f16`, `bf16`).
    Float,
    /// `i32` or `i64` (offsets, lengths, gather indices).
    Index,
    /// `bool` (conditions).
    Bool,
}

impl DtypeRule {
    /// Whether `dtype` is in the class.
    pub fn admits(self, dtype: DType) -> bool {
        match self {
            DtypeRule::Any => true,
            DtypeRule::Numeric => dtype != DType::Bool,
            DtypeRule::Float => dtype.is_float(),
            DtypeRule::Index => dtype.is_index(),
            DtypeRule::Bool => dtype == DType::Bool,
        }
    }

    /// What the rule requires, as the validator's errors say it
    /// (`a float type is required`).
    pub fn requirement(self) -> &'static str {
        match self {
            DtypeRule::Any => "any type is allowed",
            DtypeRule::Numeric => "a numeric type is required",
            DtypeRule::Float => "a float type is required",
            DtypeRule::Index => "i32 or i64 is required",
            DtypeRule::Bool => "bool is required",
        }
    }

    /// The class as an adjective for the DSL's messages (`a float tensor`).
    pub fn tensor_noun(self) -> &'static str {
        match self {
            DtypeRule::Any => "a tensor",
            DtypeRule::Numeric => "a numeric (non-bool) tensor",
            DtypeRule::Float => "a float tensor",
            DtypeRule::Index => "an i32 or i64 tensor",
            DtypeRule::Bool => "a bool tensor",
        }
    }
}

/// The accumulator dtype of computations in `dtype`: `f64` for `f64`, else
/// `f32` (contractions, positions and lengths of the DSL, the builtin ops'
/// internal precision).
pub fn accumulator(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// The operand dtypes of a unary node (`-x`, `exp`, ...): floats.
pub const fn unary_rule(op: UnaryOp) -> DtypeRule {
    match op {
        UnaryOp::Neg
        | UnaryOp::Exp
        | UnaryOp::Log
        | UnaryOp::Silu
        | UnaryOp::Sqrt
        | UnaryOp::Rsqrt
        | UnaryOp::Abs
        | UnaryOp::Relu
        | UnaryOp::Sigmoid
        | UnaryOp::Tanh => DtypeRule::Float,
    }
}

/// The operand dtypes of a binary node (both operands have one dtype):
/// numeric, float for `pow`.
pub const fn binary_rule(op: BinaryOp) -> DtypeRule {
    match op {
        BinaryOp::Pow => DtypeRule::Float,
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Mul
        | BinaryOp::Div
        | BinaryOp::Max
        | BinaryOp::Min => DtypeRule::Numeric,
    }
}

/// The operand dtypes of a comparison (both operands have one dtype): any.
pub const fn compare_rule(_op: CompareOp) -> DtypeRule {
    DtypeRule::Any
}

/// The operand dtypes of a reduction: numeric for `sum` and `max`, float for
/// `mean` and `logsumexp`.
pub const fn reduce_rule(op: ReduceOp) -> DtypeRule {
    match op {
        ReduceOp::Sum | ReduceOp::Max | ReduceOp::ArgMin | ReduceOp::ArgMax => DtypeRule::Numeric,
        ReduceOp::Mean | ReduceOp::LogSumExp => DtypeRule::Float,
    }
}

/// The operand dtypes of a softmax: floats.
pub const SOFTMAX_RULE: DtypeRule = DtypeRule::Float;
/// The operand dtypes of a scan: numeric.
pub const SCAN_RULE: DtypeRule = DtypeRule::Numeric;
/// The operand dtypes of a contraction (both operands have one dtype): numeric.
pub const CONTRACT_RULE: DtypeRule = DtypeRule::Numeric;
/// The operand dtypes of a rank: numeric (what argmin and argmax order).
pub const RANK_RULE: DtypeRule = DtypeRule::Numeric;
/// The dtype of a position node: numeric.
pub const POSITION_RULE: DtypeRule = DtypeRule::Numeric;
/// The condition of a select: bool.
pub const SELECT_CONDITION_RULE: DtypeRule = DtypeRule::Bool;
/// The index of a gather: i32 or i64.
pub const GATHER_INDEX_RULE: DtypeRule = DtypeRule::Index;

/// Whether a contraction of `operand` values may accumulate in `acc`: in a
/// numeric dtype, and a float one when the operands are floats (a float sum
/// is not truncated to an integer); `Err` says why not.
pub fn contract_result_rule(operand: DType, acc: DType) -> Result<(), &'static str> {
    if !CONTRACT_RULE.admits(acc) {
        return Err(CONTRACT_RULE.requirement());
    }
    if operand.is_float() && !acc.is_float() {
        return Err("float operands accumulate in a float type");
    }
    Ok(())
}

/// The Rust types of the DSL's scalars: a literal's suffix (`0.5f32`; or
/// none) and the target of `as` (`max_len as f32`). Whatever the type, a
/// scalar takes the dtype of the tensor it meets.
pub const SCALAR_TYPES: &[&str] = &["f32", "f64", "i32", "i64", "usize"];

/// The kinds of DSL tensor, each a class of IR shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DslKind {
    /// `Jagged<T, S>`: `[%s, S...]`.
    Jagged,
    /// `Pairs<T, S>`: `[%s, %s, S...]`.
    Pairs,
    /// `PerSeq<T, S>`: `[B, S...]`.
    PerSeq,
    /// `Padded<T, S>`: `[B, N, S...]`.
    Padded,
    /// `Dense<T, S>`: `[S...]`, static dims only.
    Dense,
    /// `Lengths<I>`: `[B]`.
    Lengths,
    /// `Offsets<I>`: `[B+1]`.
    Offsets,
}

impl DslKind {
    /// Every kind.
    pub const ALL: [DslKind; 7] = [
        DslKind::Jagged,
        DslKind::Pairs,
        DslKind::PerSeq,
        DslKind::Padded,
        DslKind::Dense,
        DslKind::Lengths,
        DslKind::Offsets,
    ];

    /// The DSL's type name (`Jagged`).
    pub fn name(self) -> &'static str {
        match self {
            DslKind::Jagged => "Jagged",
            DslKind::Pairs => "Pairs",
            DslKind::PerSeq => "PerSeq",
            DslKind::Padded => "Padded",
            DslKind::Dense => "Dense",
            DslKind::Lengths => "Lengths",
            DslKind::Offsets => "Offsets",
        }
    }

    /// The IR shape class, as the text form writes it (`[%s, ...]`).
    pub fn shape_class(self) -> &'static str {
        match self {
            DslKind::Jagged => "[%s, ...]",
            DslKind::Pairs => "[%s, %s, ...]",
            DslKind::PerSeq => "[B, ...]",
            DslKind::Padded => "[B, N, ...]",
            DslKind::Dense => "[...]",
            DslKind::Lengths => "[B]",
            DslKind::Offsets => "[B+1]",
        }
    }
}

/// The IR node a DSL method or function builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DslNode {
    /// `unary`.
    Unary(UnaryOp),
    /// `binary` (`add`, ..., `max`, `pow`).
    Binary(BinaryOp),
    /// `compare`.
    Compare(CompareOp),
    /// `select`.
    Select,
    /// `cast`.
    Cast,
    /// `reduce` along a sequence, key or feature axis.
    Reduce(ReduceOp),
    /// `softmax`.
    Softmax,
    /// `mask` then `select` (`causal`, ...).
    Mask,
    /// `to_padded` (and a `select` for a padding value).
    ToPadded,
    /// `from_padded`.
    FromPadded,
    /// `seqs_where` and `compact`.
    Compact,
    /// `seqs_triu` and `pack_triu`.
    PackTriu,
    /// `offsets`.
    Offsets,
    /// `contract`.
    Contract,
    /// `position`.
    Position,
    /// `lengths` (and a `cast`).
    Lengths,
    /// `gather`.
    Gather,
    /// `scan complete`.
    Scan,
    /// `rank`.
    Rank,
    /// `shift`.
    Shift,
    /// `topk indices`.
    TopK,
    /// `take`.
    Take,
}

/// The dtype of a method's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultDtype {
    /// The receiver's.
    Receiver,
    /// `bool`.
    Bool,
    /// The [`accumulator`] dtype of the receiver's.
    Accumulator,
    /// The type argument's (`.cast::<U>()`, `.dot_acc::<U>(k)`).
    TypeArgument,
    /// The kernel's offsets dtype.
    OffsetsDtype,
    /// `i32`: an index (`argmin_over_features`, `argmax_over_features`).
    Index,
}

/// The kind of a method's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultKind {
    /// The receiver's.
    Receiver,
    /// This kind.
    Is(DslKind),
    /// The argument's (`table.at(index)`: the index's kind).
    Argument,
}

/// One DSL method on the receivers of some kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method {
    /// Its name (`sum_over_seq`).
    pub name: &'static str,
    /// Its number of arguments, the receiver not counted.
    pub arity: usize,
    /// Whether it takes a type argument (`.cast::<U>()`).
    pub type_argument: bool,
    /// The kinds of receiver it is defined on.
    pub receivers: &'static [DslKind],
    /// The IR node it builds.
    pub node: DslNode,
    /// The receiver's dtypes: the validator's rule for that node.
    pub dtype: DtypeRule,
    /// The result's dtype.
    pub result_dtype: ResultDtype,
    /// The result's kind.
    pub result_kind: ResultKind,
}

/// Kinds with elementwise math (every kind but lengths and offsets).
pub const ELEMENTWISE_KINDS: &[DslKind] = &[
    DslKind::Jagged,
    DslKind::Pairs,
    DslKind::PerSeq,
    DslKind::Padded,
    DslKind::Dense,
];

const J: &[DslKind] = &[DslKind::Jagged];
const P: &[DslKind] = &[DslKind::Pairs];
const JP: &[DslKind] = &[DslKind::Jagged, DslKind::Pairs];
const JD: &[DslKind] = &[DslKind::Jagged, DslKind::Padded];
const JS: &[DslKind] = &[DslKind::Jagged, DslKind::PerSeq];
const E: &[DslKind] = ELEMENTWISE_KINDS;
/// The kinds whose inner dims `sum_over_groups` reduces (the DSL's
/// receivers with two named inner dims; a `Pairs` value has its feature
/// dims after two row axes and is left out).
const GROUPS: &[DslKind] = &[
    DslKind::Jagged,
    DslKind::PerSeq,
    DslKind::Padded,
    DslKind::Dense,
];
const MATMUL: &[DslKind] = &[
    DslKind::Jagged,
    DslKind::Pairs,
    DslKind::PerSeq,
    DslKind::Dense,
];

const fn m(
    name: &'static str,
    arity: usize,
    receivers: &'static [DslKind],
    node: DslNode,
    dtype: DtypeRule,
    result_dtype: ResultDtype,
    result_kind: ResultKind,
) -> Method {
    Method {
        name,
        arity,
        type_argument: false,
        receivers,
        node,
        dtype,
        result_dtype,
        result_kind,
    }
}

const fn elementwise_unary(name: &'static str, op: UnaryOp) -> Method {
    m(
        name,
        0,
        E,
        DslNode::Unary(op),
        unary_rule(op),
        ResultDtype::Receiver,
        ResultKind::Receiver,
    )
}

const fn compare(name: &'static str, op: CompareOp) -> Method {
    m(
        name,
        1,
        E,
        DslNode::Compare(op),
        compare_rule(op),
        ResultDtype::Bool,
        ResultKind::Receiver,
    )
}

const fn reduce(
    name: &'static str,
    receivers: &'static [DslKind],
    op: ReduceOp,
    result_kind: ResultKind,
) -> Method {
    m(
        name,
        0,
        receivers,
        DslNode::Reduce(op),
        reduce_rule(op),
        ResultDtype::Receiver,
        result_kind,
    )
}

const fn with_type_argument(mut method: Method) -> Method {
    method.type_argument = true;
    method
}

use DslKind as K;
use ResultDtype as D;
use ResultKind as R;

/// Every DSL method: name, arity, receivers, IR node and typing rule. The
/// macro's method lists, arities and receiver dtype checks come from here.
pub const METHODS: &[Method] = &[
    elementwise_unary("exp", UnaryOp::Exp),
    elementwise_unary("log", UnaryOp::Log),
    elementwise_unary("silu", UnaryOp::Silu),
    elementwise_unary("sqrt", UnaryOp::Sqrt),
    elementwise_unary("rsqrt", UnaryOp::Rsqrt),
    elementwise_unary("abs", UnaryOp::Abs),
    elementwise_unary("relu", UnaryOp::Relu),
    elementwise_unary("sigmoid", UnaryOp::Sigmoid),
    elementwise_unary("tanh", UnaryOp::Tanh),
    m(
        "powf",
        1,
        E,
        DslNode::Binary(BinaryOp::Pow),
        binary_rule(BinaryOp::Pow),
        D::Receiver,
        R::Receiver,
    ),
    m(
        "max",
        1,
        E,
        DslNode::Binary(BinaryOp::Max),
        binary_rule(BinaryOp::Max),
        D::Receiver,
        R::Receiver,
    ),
    m(
        "min",
        1,
        E,
        DslNode::Binary(BinaryOp::Min),
        binary_rule(BinaryOp::Min),
        D::Receiver,
        R::Receiver,
    ),
    with_type_argument(m(
        "cast",
        0,
        E,
        DslNode::Cast,
        DtypeRule::Any,
        D::TypeArgument,
        R::Receiver,
    )),
    compare("lt", CompareOp::Lt),
    compare("le", CompareOp::Le),
    compare("gt", CompareOp::Gt),
    compare("ge", CompareOp::Ge),
    compare("eq", CompareOp::Eq),
    compare("ne", CompareOp::Ne),
    reduce("sum_over_features", E, ReduceOp::Sum, R::Receiver),
    reduce("mean_over_features", E, ReduceOp::Mean, R::Receiver),
    reduce("max_over_features", E, ReduceOp::Max, R::Receiver),
    // The index (i32) of the smallest / largest entry of the last inner dim:
    // ties to the lowest index, a NaN wins, -1 over an empty dim.
    m(
        "argmin_over_features",
        0,
        E,
        DslNode::Reduce(ReduceOp::ArgMin),
        reduce_rule(ReduceOp::ArgMin),
        D::Index,
        R::Receiver,
    ),
    m(
        "argmax_over_features",
        0,
        E,
        DslNode::Reduce(ReduceOp::ArgMax),
        reduce_rule(ReduceOp::ArgMax),
        D::Index,
        R::Receiver,
    ),
    // The sum over the second-to-last inner dim: `(.., G, D)` to `(.., D)`.
    reduce("sum_over_groups", GROUPS, ReduceOp::Sum, R::Receiver),
    // Not on `Padded`: a contraction has no padded (`N`) axis.
    m(
        "matmul",
        1,
        MATMUL,
        DslNode::Contract,
        CONTRACT_RULE,
        D::Accumulator,
        R::Receiver,
    ),
    // `x.matmul_t(w)`: x's last inner dim contracted with the last of a
    // weight `Dense<T, (N, K)>` or `PerSeq<T, (N, K)>` (`x @ w^T`).
    m(
        "matmul_t",
        1,
        JS,
        DslNode::Contract,
        CONTRACT_RULE,
        D::Accumulator,
        R::Receiver,
    ),
    // `x.matmul_t_grouped(w)`: per group `g` of x's `(.., G, K)` rows, the
    // product with the transposed `w[g]` of a `Dense<T, (G, N, K)>`:
    // `x[.., g, :] @ w[g]^T`, `(.., G, K)` to `(.., G, N)` (the contraction
    // `x[..gk], w[gnk] -> ..gn`, `g` a batch letter).
    m(
        "matmul_t_grouped",
        1,
        JS,
        DslNode::Contract,
        CONTRACT_RULE,
        D::Accumulator,
        R::Receiver,
    ),
    // `x.matmul_grouped(w)`: per group `g` of x's `(.., G, K)` rows, the
    // product with `w[g]` of a `Dense<T, (G, K, N)>`: `x[.., g, :] @ w[g]`,
    // `(.., G, K)` to `(.., G, N)` (the contraction `x[..gk], w[gkn] -> ..gn`,
    // `g` a batch letter).
    m(
        "matmul_grouped",
        1,
        JS,
        DslNode::Contract,
        CONTRACT_RULE,
        D::Accumulator,
        R::Receiver,
    ),
    // `x.outer_sum_over_seq(y)`: `sum_i x[i]^T y[i]` over each sequence's
    // rows, the inner dims of `x` then those of `y`.
    m(
        "outer_sum_over_seq",
        1,
        J,
        DslNode::Contract,
        CONTRACT_RULE,
        D::Accumulator,
        R::Is(K::PerSeq),
    ),
    reduce("sum_over_seq", J, ReduceOp::Sum, R::Is(K::PerSeq)),
    reduce("mean_over_seq", J, ReduceOp::Mean, R::Is(K::PerSeq)),
    reduce("max_over_seq", J, ReduceOp::Max, R::Is(K::PerSeq)),
    reduce(
        "logsumexp_over_seq",
        J,
        ReduceOp::LogSumExp,
        R::Is(K::PerSeq),
    ),
    m(
        "softmax_over_seq",
        0,
        J,
        DslNode::Softmax,
        SOFTMAX_RULE,
        D::Receiver,
        R::Receiver,
    ),
    m(
        "to_padded",
        0,
        J,
        DslNode::ToPadded,
        DtypeRule::Any,
        D::Receiver,
        R::Is(K::Padded),
    ),
    m(
        "to_padded_or",
        1,
        J,
        DslNode::ToPadded,
        DtypeRule::Any,
        D::Receiver,
        R::Is(K::Padded),
    ),
    m(
        "dot",
        1,
        J,
        DslNode::Contract,
        CONTRACT_RULE,
        D::Accumulator,
        R::Is(K::Pairs),
    ),
    with_type_argument(m(
        "dot_acc",
        1,
        J,
        DslNode::Contract,
        CONTRACT_RULE,
        D::TypeArgument,
        R::Is(K::Pairs),
    )),
    m(
        "compact",
        1,
        J,
        DslNode::Compact,
        DtypeRule::Any,
        D::Receiver,
        R::Receiver,
    ),
    // The place (i32) of each row in its sequence's stable sort, smallest
    // or largest first: ties to the lower row, a NaN first; `rank < k`
    // keeps each sequence's `k` best rows.
    m(
        "ascending_rank_over_seq",
        0,
        J,
        DslNode::Rank,
        RANK_RULE,
        D::Index,
        R::Receiver,
    ),
    m(
        "descending_rank_over_seq",
        0,
        J,
        DslNode::Rank,
        RANK_RULE,
        D::Index,
        R::Receiver,
    ),
    // `x.shift_rows(by)`: row `i` reads row `i + by` of its sequence, 0
    // past the sequence's ends (`by` an integer literal; `-1` is the
    // previous row).
    m(
        "shift_rows",
        1,
        J,
        DslNode::Shift,
        DtypeRule::Any,
        D::Receiver,
        R::Receiver,
    ),
    // `x.smallest_k_over_features::<K>()`: the indices (i32) of the `K`
    // smallest (largest) entries of the last inner dim, best first, in
    // rank's stable sort (`K` a dim parameter, at most that dim).
    with_type_argument(m(
        "smallest_k_over_features",
        0,
        E,
        DslNode::TopK,
        RANK_RULE,
        D::Index,
        R::Receiver,
    )),
    with_type_argument(m(
        "largest_k_over_features",
        0,
        E,
        DslNode::TopK,
        RANK_RULE,
        D::Index,
        R::Receiver,
    )),
    // `x.take_features(index)`: entries of the first inner dim of each row
    // picked by an integer index of the receiver's kind (or a `Dense` one,
    // the same for every row): `(A, R..)` at `(E..)` gives `(E.., R..)`.
    m(
        "take_features",
        1,
        GROUPS,
        DslNode::Take,
        DtypeRule::Any,
        D::Receiver,
        R::Receiver,
    ),
    m(
        "offsets",
        0,
        J,
        DslNode::Offsets,
        DtypeRule::Any,
        D::OffsetsDtype,
        R::Is(K::Offsets),
    ),
    m(
        "row_pos",
        0,
        JD,
        DslNode::Position,
        DtypeRule::Any,
        D::Accumulator,
        R::Receiver,
    ),
    m(
        "seq_len",
        0,
        JP,
        DslNode::Lengths,
        DtypeRule::Any,
        D::Accumulator,
        R::Is(K::PerSeq),
    ),
    m(
        "softmax_over_keys",
        0,
        P,
        DslNode::Softmax,
        SOFTMAX_RULE,
        D::Receiver,
        R::Receiver,
    ),
    reduce("sum_over_keys", P, ReduceOp::Sum, R::Is(K::Jagged)),
    reduce(
        "logsumexp_over_keys",
        P,
        ReduceOp::LogSumExp,
        R::Is(K::Jagged),
    ),
    m(
        "causal",
        0,
        P,
        DslNode::Mask,
        DtypeRule::Any,
        D::Receiver,
        R::Receiver,
    ),
    m(
        "causal_or",
        1,
        P,
        DslNode::Mask,
        DtypeRule::Any,
        D::Receiver,
        R::Receiver,
    ),
    m(
        "anticausal",
        0,
        P,
        DslNode::Mask,
        DtypeRule::Any,
        D::Receiver,
        R::Receiver,
    ),
    m(
        "anticausal_or",
        1,
        P,
        DslNode::Mask,
        DtypeRule::Any,
        D::Receiver,
        R::Receiver,
    ),
    m(
        "dot",
        1,
        P,
        DslNode::Contract,
        CONTRACT_RULE,
        D::Receiver,
        R::Is(K::Jagged),
    ),
    with_type_argument(m(
        "dot_acc",
        1,
        P,
        DslNode::Contract,
        CONTRACT_RULE,
        D::TypeArgument,
        R::Is(K::Jagged),
    )),
    // The strict upper triangle `i < j < n_b`, packed row-major on a new
    // sequence set of `n_b (n_b - 1) / 2` rows.
    m(
        "pack_triu",
        0,
        P,
        DslNode::PackTriu,
        DtypeRule::Any,
        D::Receiver,
        R::Is(K::Jagged),
    ),
    m(
        "query_pos",
        0,
        P,
        DslNode::Position,
        DtypeRule::Any,
        D::Accumulator,
        R::Receiver,
    ),
    m(
        "key_pos",
        0,
        P,
        DslNode::Position,
        DtypeRule::Any,
        D::Accumulator,
        R::Receiver,
    ),
    m(
        "to_jagged",
        0,
        &[K::Padded],
        DslNode::FromPadded,
        DtypeRule::Any,
        D::Receiver,
        R::Is(K::Jagged),
    ),
    m(
        "at",
        1,
        &[K::Dense],
        DslNode::Gather,
        DtypeRule::Any,
        D::Receiver,
        R::Argument,
    ),
    m(
        "complete_cumsum",
        0,
        &[K::Lengths],
        DslNode::Scan,
        SCAN_RULE,
        D::Receiver,
        R::Is(K::Offsets),
    ),
];

/// The methods defined on receivers of `kind`, in table order.
pub fn methods_of(kind: DslKind) -> impl Iterator<Item = &'static Method> {
    METHODS.iter().filter(move |m| m.receivers.contains(&kind))
}

/// The method `name` on a receiver of `kind`, if there is one.
pub fn method(kind: DslKind, name: &str) -> Option<&'static Method> {
    methods_of(kind).find(|m| m.name == name)
}

/// One DSL function (`exp(x)`, `select(c, a, b)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Function {
    /// Its name.
    pub name: &'static str,
    /// Its number of arguments.
    pub arity: usize,
    /// The IR node it builds.
    pub node: DslNode,
    /// The dtypes of its (data) operands: the validator's rule for that node.
    pub dtype: DtypeRule,
}

const fn f(name: &'static str, arity: usize, node: DslNode, dtype: DtypeRule) -> Function {
    Function {
        name,
        arity,
        node,
        dtype,
    }
}

/// Every DSL function; the macro's function list and arities come from here.
pub const FUNCTIONS: &[Function] = &[
    f(
        "exp",
        1,
        DslNode::Unary(UnaryOp::Exp),
        unary_rule(UnaryOp::Exp),
    ),
    f(
        "log",
        1,
        DslNode::Unary(UnaryOp::Log),
        unary_rule(UnaryOp::Log),
    ),
    f(
        "silu",
        1,
        DslNode::Unary(UnaryOp::Silu),
        unary_rule(UnaryOp::Silu),
    ),
    f(
        "sqrt",
        1,
        DslNode::Unary(UnaryOp::Sqrt),
        unary_rule(UnaryOp::Sqrt),
    ),
    f(
        "rsqrt",
        1,
        DslNode::Unary(UnaryOp::Rsqrt),
        unary_rule(UnaryOp::Rsqrt),
    ),
    f(
        "abs",
        1,
        DslNode::Unary(UnaryOp::Abs),
        unary_rule(UnaryOp::Abs),
    ),
    f(
        "relu",
        1,
        DslNode::Unary(UnaryOp::Relu),
        unary_rule(UnaryOp::Relu),
    ),
    f(
        "sigmoid",
        1,
        DslNode::Unary(UnaryOp::Sigmoid),
        unary_rule(UnaryOp::Sigmoid),
    ),
    f(
        "tanh",
        1,
        DslNode::Unary(UnaryOp::Tanh),
        unary_rule(UnaryOp::Tanh),
    ),
    f(
        "powf",
        2,
        DslNode::Binary(BinaryOp::Pow),
        binary_rule(BinaryOp::Pow),
    ),
    f(
        "max",
        2,
        DslNode::Binary(BinaryOp::Max),
        binary_rule(BinaryOp::Max),
    ),
    f(
        "min",
        2,
        DslNode::Binary(BinaryOp::Min),
        binary_rule(BinaryOp::Min),
    ),
    f("select", 3, DslNode::Select, DtypeRule::Any),
];

/// The DSL function `name`, if there is one.
pub fn function(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// One DSL operator (`a + b`, `-x`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Operator {
    /// Its Rust spelling (`+`; `neg` for unary `-`).
    pub symbol: &'static str,
    /// The IR node it builds.
    pub node: DslNode,
    /// The operands' dtypes: the validator's rule for that node.
    pub dtype: DtypeRule,
}

const fn op(symbol: &'static str, node: DslNode, dtype: DtypeRule) -> Operator {
    Operator {
        symbol,
        node,
        dtype,
    }
}

/// The DSL's operators on tensors.
pub const OPERATORS: &[Operator] = &[
    op(
        "+",
        DslNode::Binary(BinaryOp::Add),
        binary_rule(BinaryOp::Add),
    ),
    op(
        "-",
        DslNode::Binary(BinaryOp::Sub),
        binary_rule(BinaryOp::Sub),
    ),
    op(
        "*",
        DslNode::Binary(BinaryOp::Mul),
        binary_rule(BinaryOp::Mul),
    ),
    op(
        "/",
        DslNode::Binary(BinaryOp::Div),
        binary_rule(BinaryOp::Div),
    ),
    op(
        "neg",
        DslNode::Unary(UnaryOp::Neg),
        unary_rule(UnaryOp::Neg),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_unique_per_kind() {
        for kind in DslKind::ALL {
            let names: Vec<&str> = methods_of(kind).map(|m| m.name).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "{kind:?}: {names:?}");
        }
    }

    #[test]
    fn functions_mirror_the_elementwise_methods() {
        for func in FUNCTIONS.iter().filter(|f| f.name != "select") {
            let method = method(DslKind::Jagged, func.name).expect(func.name);
            assert_eq!(method.arity + 1, func.arity, "{}", func.name);
            assert_eq!(method.node, func.node, "{}", func.name);
            assert_eq!(method.dtype, func.dtype, "{}", func.name);
        }
    }

    #[test]
    fn contract_results() {
        assert!(contract_result_rule(DType::BF16, DType::F32).is_ok());
        assert!(contract_result_rule(DType::I32, DType::I64).is_ok());
        assert!(contract_result_rule(DType::I32, DType::F32).is_ok());
        assert!(contract_result_rule(DType::F32, DType::I32).is_err());
        assert!(contract_result_rule(DType::I32, DType::Bool).is_err());
    }
}

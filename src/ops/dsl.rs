//! The types a `#[jagged_kernel]` function is written against.
//!
//! The macro reads the function's body and builds the graph from it; the
//! function itself is also emitted, so rustc type-checks it against these
//! phantom types (and an IDE completes methods on them). They carry no data
//! and their methods compute nothing: they exist only so that a well-formed
//! kernel is well-typed Rust. Shapes are tuples of generic dim parameters
//! (`(H, D)`, `(D,)`, `()`) or a generic shape parameter (`S`, any inner dims).
//!
//! | type | tensor |
//! |---|---|
//! | `Jagged<T, S>` | `values [T, S...]` on the kernel's sequences (one offsets input) |
//! | `PerSeq<T, S>` | one row per sequence, `[B, S...]` (results of reductions) |
//! | `Padded<T, S>` | `[B, N, S...]` with `N` = `max_len` |
//! | `Pairs<T, S>` | per sequence `[n_b, n_b, S...]`, query row by key row (`q.dot(k)`) |
//! | `Dense<T, S>` | `[S...]`, static dims only: a weight vector `Dense<T, (D,)>` or matrix `Dense<T, (K, M)>`, broadcast to every row |
//! | `Lengths<I>` | `[B]` integers |
//! | `Offsets<I>` | `[B+1]` integers; plain `Offsets` has the kernel's offsets dtype |
//!
//! Parameters are tensors of these types or scalar attributes
//! (`#[attr] max_len: usize`, `#[attr] alpha: f32`,
//! `#[attr(default = 0.0)] padding_value: f32`); `max_len` truncates every
//! sequence to its first `max_len` rows. Jagged parameters share one offsets
//! input. Declare it (`offsets: Offsets`, under any name, anywhere among the
//! parameters) and the generated `launch` takes it where the signature puts
//! it; undeclared, it is named `offsets` and `launch` takes it just before the
//! first jagged parameter (the generated docs of `launch` list its arguments
//! in order either way).
//!
//! A static attribute, `#[attr(static)] causal: bool` or `#[attr(static)]
//! activation: Activation` (any `Copy` enum implementing [`StaticAttr`]), is
//! a parameter of `graph(...)` and `launch(...)`, not of the graph: the body
//! selects with it while the graph is built, `if causal { .. } else { .. }`
//! and `match activation { Activation::Softmax => .., Activation::Silu => ..
//! }` (arms may be blocks with their own `let`s; every arm is checked and
//! gives the same kind, dtype and shape). An output declared
//! `Option<Jagged<..>>` is `Some(x)` or `None` in the last expression, per
//! static value, and `launch` returns it as an `Option`.
//!
//! The body is `let` bindings and one final expression (a tuple for several
//! outputs, named by `#[jagged_kernel(outputs(a, b))]`), over:
//!
//! | operation | on |
//! |---|---|
//! | `+ - * /`, unary `-`, `max(a, b)`, `min(a, b)`, `select(cond, a, b)` | tensors and scalars, broadcast |
//! | `a.lt(b)`, `a.le(b)`, `a.gt(b)`, `a.ge(b)`, `a.eq(b)`, `a.ne(b)` -> bool tensor (`select`'s condition; IEEE: false with a NaN, but `ne` true) | tensors and scalars on either side (`dist.le(window)`, `window.ge(dist)`), broadcast |
//! | `.sum_over_features()`, `.mean_over_features()`, `.max_over_features()`: reduce the last inner dim (`(H, D)` to `(H,)`) | any tensor with named inner dims |
//! | `.argmin_over_features()`, `.argmax_over_features()`: the index (i32) of the smallest / largest entry of the last inner dim (`(M, K)` to `(M,)`; ties to the lowest index, a NaN wins, -1 when the dim is 0) | any tensor with named inner dims |
//! | `.sum_over_groups()`: sum over the second-to-last inner dim (`(G, D)` to `(D,)`) | `Jagged`, `PerSeq`, `Padded`, `Dense` with two or more named inner dims |
//! | `x.matmul(w)` with `w: Dense<T, (K, M)>`: `(.., K)` to `(.., M)` per row, in the accumulator dtype | `Jagged`, `PerSeq`, `Pairs`, `Dense` with named inner dims (not `Padded`) |
//! | `x.matmul(w)` with a per-sequence `w: PerSeq<T, (K, M)>` (`x[o_b + i] @ w[b]`), `x.matmul_t(w)` with `w: Dense<T, (N, K)>` or `PerSeq<T, (N, K)>` (`x @ w^T`: `(.., K)` to `(.., N)`) | `Jagged`, `PerSeq` |
//! | `x.matmul_t_grouped(w)` with `w: Dense<T, (G, N, K)>`: per group `g`, `x[.., g, :] @ w[g]^T` (`(.., G, K)` to `(.., G, N)`, the contraction `x[..gk], w[gnk] -> ..gn`), in the accumulator dtype | `Jagged`, `PerSeq` |
//! | `x.matmul_grouped(w)` with `w: Dense<T, (G, K, N)>`: per group `g`, `x[.., g, :] @ w[g]` (`(.., G, K)` to `(.., G, N)`, the contraction `x[..gk], w[gkn] -> ..gn`), in the accumulator dtype | `Jagged`, `PerSeq` |
//! | `x.outer_sum_over_seq(y)` -> `PerSeq`: `sum_{i < n_b} x[i]^T y[i]` (`(M,)` and `(P,)` give `(M, P)`) | `Jagged` |
//! | `x.ascending_rank_over_seq()`, `x.descending_rank_over_seq()`: each row's place (i32) in its sequence's stable sort (ties to the lower row, NaN first); `rank.lt(k)` keeps the `k` best rows | `Jagged` |
//! | `x.smallest_k_over_features::<K>()`, `x.largest_k_over_features::<K>()`: the indices (i32) of the `K` best entries of the last inner dim, best first (`K` a dim parameter) | any kind with inner dims |
//! | `x.take_features(index)`: entries of the first inner dim picked within each row by an integer index of `x`'s kind, or a `Dense` one for every row (`(A, R..)` at `(E..)` gives `(E.., R..)`) | `Jagged`, `PerSeq`, `Padded`, `Dense` |
//! | `x.shift_rows(by)`: row `i` reads row `i + by` of its sequence, 0 past its ends (`by` an integer literal) | `Jagged` |
//! | `table.at(index)`: the rows of `table: Dense<T, (K, ..)>` at an i32/i64 `index` of any kind with no inner dims, or one (`index: Jagged<i32, (L,)>` gives `(L, ..)`: a row per entry) (0 outside `0..K`); a learned relative-position bias is `bias.at(((s.query_pos() - s.key_pos()).max(-w).min(w) + w).cast::<i64>())` | `Dense` |
//! | `.exp()`, `.log()`, `.silu()`, `.sqrt()`, `.rsqrt()`, `.abs()`, `.relu()`, `.sigmoid()`, `.tanh()` (or `exp(x)`, `relu(x)`, ...) | any float tensor |
//! | `.max(y)`, `.min(y)` (and `+ - * /`) | any numeric (non-bool) tensor |
//! | `.cast::<U>()` | any tensor |
//! | `.powf(p)` (or `powf(x, p)`): `x^p` for a scalar `p`, IEEE `pow` (NaN for a negative `x` unless `p` is an integer) | any float tensor |
//! | `.sum_over_seq()`, `.mean_over_seq()`, `.max_over_seq()`, `.logsumexp_over_seq()` -> `PerSeq` | `Jagged` |
//! | `.softmax_over_seq()`, `.to_padded()`, `.to_padded_or(v)`, `.compact(mask)`, `.offsets()` | `Jagged` |
//! | `q.dot(k)` -> `Pairs` (contracts the last dim), `q.dot_acc::<U>(k)` (accumulates in `U`) | `Jagged` |
//! | `.row_pos()`: each row's index `i` in its sequence; `.seq_len()` -> `PerSeq`: `n_b` | `Jagged` (`row_pos` also `Padded`) |
//! | `.query_pos()`, `.key_pos()`: `i` and `j` of each pair; `.seq_len()` | `Pairs` |
//! | `.pack_triu()` -> `Jagged` on new sequences: the pairs `i < j < n_b`, row-major (`n_b (n_b - 1) / 2` rows; `.offsets()` gives theirs) | `Pairs` |
//! | `.softmax_over_keys()`, `.sum_over_keys()`, `.logsumexp_over_keys()`, `p.dot(v)`, `p.dot_acc::<U>(v)` | `Pairs` |
//! | `.causal()`, `.anticausal()` (zero where `j > i`, `j < i`), `.causal_or(v)`, `.anticausal_or(v)` | `Pairs` |
//! | `.to_jagged()` | `Padded` |
//! | `.complete_cumsum()` -> `Offsets` | `Lengths` |
//!
//! Scalars (literals, `f32::NEG_INFINITY`, attributes, `max_len as f32`) take the dtype of the
//! tensor they meet, whatever their Rust type: `x * 0.5` and `x * 0.5f32` are
//! both a bf16 constant when `x` is bf16 (the suffix only matters to rustc).
//! A fractional literal or a float attribute meeting an integer tensor is an
//! error (it would be rounded), not a silent truncation.
//!
//! Results of `dot` are in the accumulator dtype: f32 (f64 for f64 operands),
//! or the one named with `dot_acc::<U>` (`q.dot_acc::<f64>(k)` for f32 inputs
//! summed in f64). Positions and lengths (`row_pos`, `query_pos`, `key_pos`,
//! `seq_len`) are numbers in the accumulator dtype of the value they come
//! from, so they are exact below 2^24 even for bf16 values and mix with
//! scores without a cast. A float tensor meeting one in its accumulator dtype
//! (a bf16 value and f32 scores, `T` and the result of `dot` or `matmul`) is
//! converted to the accumulator, losslessly; other dtype mismatches are
//! errors (convert with `.cast::<U>()`). A value in the accumulator dtype of
//! an output's declared dtype (f32 for a bf16 output) is rounded to it.
//!
//! Which dtypes each operation accepts, and its result's kind and dtype, are
//! the IR validator's rules, tabulated in `jagged::ir::typing` (`METHODS`,
//! `FUNCTIONS`, `OPERATORS`): the macro checks a body with them, so a body it
//! accepts builds a graph the validator accepts. The phantom types here
//! check kinds, shapes, method names and arities, not dtypes; the
//! `typing_agreement` test checks them against that table.
//!
//! Elementwise operands are matched by structure, as the IR's validator
//! does: the one with more row axes gives the result's kind (a `Dense<T,
//! (D,)>` meets every row of a `Jagged<T, (D,)>`, a `PerSeq<T, (D,)>` or a
//! `Pairs<T, (D,)>`), and inner dims are equal or one side has none (so
//! `(H, D)` does not meet `(H,)` or `(D,)`).
//!
//! ```
//! use jagged::dsl::*;
//!
//! /// Softmax over each sequence, per column, written out.
//! #[jagged_kernel(outputs(values))]
//! fn my_softmax<S>(values: Jagged<f32, S>, #[attr] max_len: usize) -> Jagged<f32, S> {
//!     let e = (values - values.max_over_seq()).exp();
//!     e / e.sum_over_seq()
//! }
//!
//! let graph = my_softmax::graph(&[4], jagged::ir::DType::I64)?;
//! assert_eq!(graph.name(), "my_softmax");
//!
//! /// RMS norm of each row, times a per-feature weight.
//! #[jagged_kernel(outputs(y))]
//! fn my_rms_norm<T: Float, D>(
//!     x: Jagged<T, (D,)>,
//!     w: Dense<T, (D,)>,
//!     #[attr(default = 1e-6)] eps: f32,
//! ) -> Jagged<T, (D,)> {
//!     x * ((x * x).mean_over_features() + eps).rsqrt() * w
//! }
//!
//! /// Causal attention over a sliding window `|i - j| <= window`.
//! #[jagged_kernel(outputs(out))]
//! fn windowed<T: Float, H, D>(
//!     q: Jagged<T, (H, D)>,
//!     k: Jagged<T, (H, D)>,
//!     v: Jagged<T, (H, D)>,
//!     #[attr] max_len: usize,
//!     #[attr] window: usize,
//! ) -> Jagged<T, (H, D)> {
//!     let s = q.dot(k);
//!     let near = (s.query_pos() - s.key_pos()).abs().le(window);
//!     select(near, silu(s), 0.0).causal().dot(v)
//! }
//! # let _ = my_rms_norm::graph(jagged::ir::DType::BF16, 8, jagged::ir::DType::I32)?;
//! # let _ = windowed::graph(jagged::ir::DType::F32, 2, 8, jagged::ir::DType::I32)?;
//! # Ok::<(), jagged::ops::KernelError>(())
//! ```

use std::marker::PhantomData;
use std::ops::{Add, Div, Mul, Neg, Sub};

pub use half::{bf16, f16};
pub use jagged_macros::jagged_kernel;

/// A value of a DSL type, made out of nothing (the types hold no data).
pub trait Phantom: Copy {
    /// The (only) value of the type.
    fn phantom() -> Self;
}

/// Float dtypes: the bound `T: Float` makes `graph(...)` reject other dtypes.
pub trait Float {}
impl Float for f64 {}
impl Float for f32 {}
impl Float for f16 {}
impl Float for bf16 {}

/// Offset and length dtypes: the bound `I: Index` makes `graph(...)` reject others.
pub trait Index {}
impl Index for i32 {}
impl Index for i64 {}

/// The types of static attributes (`#[attr(static)] name: Ty`): `bool`, the
/// DSL's [`Activation`], or an enum of your own (`#[derive(Clone, Copy)]`,
/// variants without fields, `impl StaticAttr for MyEnum {}`). The body's
/// `match` on one names its variants with the enum's name
/// (`MyEnum::A => ..`), every one of them (no `_`).
pub trait StaticAttr: Copy {}
impl StaticAttr for bool {}
impl StaticAttr for Activation {}

/// The attention probability function (softmax over the keys or HSTU's
/// SiLU), a static attribute type of the builtin attention kernel.
pub use jagged_ir::ops::Activation;

/// Scalars of a kernel body (literals, `#[attr]` parameters, `max_len as
/// f32`): what `powf` takes as its exponent. Its types are
/// `jagged::ir::typing::SCALAR_TYPES`, the literal suffixes and `as`
/// targets the macro takes.
pub trait Scalar: Copy {}
impl Scalar for f32 {}
impl Scalar for f64 {}
impl Scalar for i32 {}
impl Scalar for i64 {}
impl Scalar for usize {}

/// The dtype of the kernel's offsets (`Offsets` without an argument).
#[derive(Clone, Copy, Debug)]
pub struct KernelIndex;

macro_rules! tensor_types {
    ($($(#[$doc:meta])* $name:ident<$($p:ident $(= $def:ty)?),*>;)*) => {$(
        $(#[$doc])*
        pub struct $name<$($p $(= $def)?),*>(PhantomData<fn() -> ($($p,)*)>);

        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<$($p),*> Copy for $name<$($p),*> {}

        impl<$($p),*> Phantom for $name<$($p),*> {
            fn phantom() -> Self {
                $name(PhantomData)
            }
        }
    )*};
}

tensor_types! {
    /// A jagged tensor `values [T, S...]` on the kernel's sequences.
    Jagged<T, S = ()>;
    /// One row per sequence, `[B, S...]`.
    PerSeq<T, S = ()>;
    /// A padded dense tensor `[B, N, S...]`.
    Padded<T, S = ()>;
    /// Per sequence, one value per (query row, key row) pair: `[n_b, n_b, S...]`.
    Pairs<T, S = ()>;
    /// Sequence lengths `[B]`.
    Lengths<I>;
    /// Sequence offsets `[B+1]`.
    Offsets<I = KernelIndex>;
    /// A dense tensor of static dims only, `[S...]` (a weight vector
    /// `Dense<T, (D,)>`, a matrix `Dense<T, (K, M)>`), broadcast against every
    /// row of the tensors it meets.
    Dense<T, S = ()>;
}

/// A tensor type with another dtype (`Retype::As<bool>` is a comparison's type).
pub trait Retype: Phantom {
    /// The same kind and shape in dtype `U`.
    type As<U>: Phantom;
}

macro_rules! retype {
    ($($kind:ident),*) => {$(
        impl<T, S> Retype for $kind<T, S> {
            type As<U> = $kind<U, S>;
        }
    )*};
}

retype!(Jagged, PerSeq, Padded, Pairs, Dense);

/// The bool tensor that comparing `L` with `R` gives.
pub type Compared<L, R> = <<L as Broadcast<R>>::Output as Retype>::As<bool>;

/// The result of elementwise math between `Self` and `R` (the operand with
/// more row axes wins: scalar, `Dense` < `PerSeq` < `Jagged`, `Padded` < `Pairs`).
pub trait Broadcast<R> {
    /// The result's type.
    type Output: Retype;
}

macro_rules! broadcast {
    ($($l:ident, $r:ident => $o:ident<$t:ident, $s:ident>;)*) => {$(
        impl<T, S, T2, S2> Broadcast<$r<T2, S2>> for $l<T, S> {
            type Output = $o<$t, $s>;
        }
    )*};
}

// Dtypes are not matched here: the macro checks them, with a better message.
broadcast! {
    Jagged, Jagged => Jagged<T, S>;
    Jagged, PerSeq => Jagged<T, S>;
    PerSeq, Jagged => Jagged<T2, S2>;
    Jagged, Padded => Jagged<T, S>;
    Padded, Jagged => Jagged<T2, S2>;
    PerSeq, PerSeq => PerSeq<T, S>;
    Padded, Padded => Padded<T, S>;
    Padded, PerSeq => Padded<T, S>;
    PerSeq, Padded => Padded<T2, S2>;
    Pairs, Pairs => Pairs<T, S>;
    Pairs, Jagged => Pairs<T, S>;
    Jagged, Pairs => Pairs<T2, S2>;
    Pairs, PerSeq => Pairs<T, S>;
    PerSeq, Pairs => Pairs<T2, S2>;
    Dense, Dense => Dense<T, S>;
    Jagged, Dense => Jagged<T, S>;
    Dense, Jagged => Jagged<T2, S2>;
    PerSeq, Dense => PerSeq<T, S>;
    Dense, PerSeq => PerSeq<T2, S2>;
    Padded, Dense => Padded<T, S>;
    Dense, Padded => Padded<T2, S2>;
    Pairs, Dense => Pairs<T, S>;
    Dense, Pairs => Pairs<T2, S2>;
}

/// Operators, scalar operands and the elementwise methods of one tensor kind.
macro_rules! elementwise {
    ($($kind:ident),*) => {$(
        elementwise!(@ops $kind: Add add, Sub sub, Mul mul, Div div);
        elementwise!(@scalar $kind: f32, f64, i32, i64, usize);

        impl<T, S> Neg for $kind<T, S> {
            type Output = Self;
            fn neg(self) -> Self {
                self
            }
        }

        impl<T, S> $kind<T, S> {
            /// `e^x`, elementwise.
            pub fn exp(self) -> Self {
                self
            }
            /// `ln x`, elementwise.
            pub fn log(self) -> Self {
                self
            }
            /// `x / (1 + e^-x)`, elementwise.
            pub fn silu(self) -> Self {
                self
            }
            /// `sqrt(x)`, elementwise (NaN for `x < 0`).
            pub fn sqrt(self) -> Self {
                self
            }
            /// `1 / sqrt(x)`, elementwise.
            pub fn rsqrt(self) -> Self {
                self
            }
            /// `|x|`, elementwise.
            pub fn abs(self) -> Self {
                self
            }
            /// `max(x, 0)`, elementwise (NaN stays NaN).
            pub fn relu(self) -> Self {
                self
            }
            /// `1 / (1 + e^-x)`, elementwise.
            pub fn sigmoid(self) -> Self {
                self
            }
            /// `tanh x`, elementwise.
            pub fn tanh(self) -> Self {
                self
            }
            /// `x^p` with a scalar exponent `p` (a literal or an attribute),
            /// elementwise, with IEEE `pow`'s values: a negative `x` gives NaN
            /// unless `p` is an integer.
            pub fn powf<P: Scalar>(self, _p: P) -> Self {
                self
            }
            /// The larger of the two, elementwise (broadcast).
            pub fn max<R>(self, _other: R) -> <Self as Broadcast<R>>::Output
            where
                Self: Broadcast<R>,
            {
                Phantom::phantom()
            }
            /// The smaller of the two, elementwise (broadcast).
            pub fn min<R>(self, _other: R) -> <Self as Broadcast<R>>::Output
            where
                Self: Broadcast<R>,
            {
                Phantom::phantom()
            }
            /// Converts to the dtype `U` (rounding).
            pub fn cast<U>(self) -> $kind<U, S> {
                Phantom::phantom()
            }
            /// `self < other`, elementwise (broadcast): a bool tensor, e.g.
            /// `select`'s condition. A scalar side takes this tensor's dtype.
            pub fn lt<R>(self, _other: R) -> Compared<Self, R>
            where
                Self: Broadcast<R>,
            {
                Phantom::phantom()
            }
            /// `self <= other`, elementwise (broadcast): a bool tensor.
            pub fn le<R>(self, _other: R) -> Compared<Self, R>
            where
                Self: Broadcast<R>,
            {
                Phantom::phantom()
            }
            /// `self > other`, elementwise (broadcast): a bool tensor.
            pub fn gt<R>(self, _other: R) -> Compared<Self, R>
            where
                Self: Broadcast<R>,
            {
                Phantom::phantom()
            }
            /// `self >= other`, elementwise (broadcast): a bool tensor.
            pub fn ge<R>(self, _other: R) -> Compared<Self, R>
            where
                Self: Broadcast<R>,
            {
                Phantom::phantom()
            }
            /// `self == other`, elementwise (broadcast): a bool tensor
            /// (false where either side is NaN).
            #[allow(clippy::should_implement_trait)]
            pub fn eq<R>(self, _other: R) -> Compared<Self, R>
            where
                Self: Broadcast<R>,
            {
                Phantom::phantom()
            }
            /// `self != other`, elementwise (broadcast): a bool tensor
            /// (true where either side is NaN).
            #[allow(clippy::should_implement_trait)]
            pub fn ne<R>(self, _other: R) -> Compared<Self, R>
            where
                Self: Broadcast<R>,
            {
                Phantom::phantom()
            }
            /// The indices (i32) of the `K` smallest entries of the last
            /// inner dim, best first (`[.., D]` to `[.., K]`, `K <= D` a dim
            /// parameter of the kernel): rank's stable sort, a NaN first and
            /// ties to the lower index.
            pub fn smallest_k_over_features<K>(self) -> $kind<i32, <S as ReplaceLast<K>>::Output>
            where
                S: ReplaceLast<K>,
            {
                Phantom::phantom()
            }
            /// As [`Self::smallest_k_over_features`], the `K` largest.
            pub fn largest_k_over_features<K>(self) -> $kind<i32, <S as ReplaceLast<K>>::Output>
            where
                S: ReplaceLast<K>,
            {
                Phantom::phantom()
            }
            /// Sum over the last inner dim (`[.., D]` to `[..]`).
            pub fn sum_over_features(self) -> $kind<T, <S as DropLast>::Output>
            where
                S: DropLast,
            {
                Phantom::phantom()
            }
            /// Mean over the last inner dim (`[.., D]` to `[..]`).
            pub fn mean_over_features(self) -> $kind<T, <S as DropLast>::Output>
            where
                S: DropLast,
            {
                Phantom::phantom()
            }
            /// Maximum over the last inner dim (`[.., D]` to `[..]`).
            pub fn max_over_features(self) -> $kind<T, <S as DropLast>::Output>
            where
                S: DropLast,
            {
                Phantom::phantom()
            }
            /// The index (i32) of the smallest entry of the last inner dim
            /// (`[.., D]` to `[..]`): the lowest such index on ties, the
            /// first NaN's if there is one, -1 when `D` is 0.
            pub fn argmin_over_features(self) -> $kind<i32, <S as DropLast>::Output>
            where
                S: DropLast,
            {
                Phantom::phantom()
            }
            /// The index (i32) of the largest entry of the last inner dim,
            /// as [`argmin_over_features`](Self::argmin_over_features).
            pub fn argmax_over_features(self) -> $kind<i32, <S as DropLast>::Output>
            where
                S: DropLast,
            {
                Phantom::phantom()
            }
        }
    )*};
    (@ops $kind:ident: $($tr:ident $m:ident),*) => {$(
        impl<T, S, R> $tr<R> for $kind<T, S>
        where
            Self: Broadcast<R>,
        {
            type Output = <Self as Broadcast<R>>::Output;
            fn $m(self, _rhs: R) -> Self::Output {
                Phantom::phantom()
            }
        }
    )*};
    (@scalar $kind:ident: $($sc:ty),*) => {
        // One impl for every scalar type, so that the result's type is known
        // before an unsuffixed literal's type is (`select(c, x, 0.0).causal()`).
        impl<T, S, X: Scalar> Broadcast<X> for $kind<T, S> {
            type Output = Self;
        }
        impl<T, S, X: Scalar> Broadcast<$kind<T, S>> for X {
            type Output = $kind<T, S>;
        }
        $(elementwise!(@scalar_lhs $kind $sc: Add add, Sub sub, Mul mul, Div div);)*
    };
    (@scalar_lhs $kind:ident $sc:ty: $($tr:ident $m:ident),*) => {$(
        impl<T, S> $tr<$kind<T, S>> for $sc {
            type Output = $kind<T, S>;
            fn $m(self, _rhs: $kind<T, S>) -> $kind<T, S> {
                Phantom::phantom()
            }
        }
    )*};
}

elementwise!(Jagged, PerSeq, Padded, Pairs, Dense);

/// `x.sum_over_groups()` on the kinds whose inner dims follow at most one
/// row axis.
macro_rules! sum_over_groups {
    ($($kind:ident),*) => {$(
        impl<T, S> $kind<T, S> {
            /// Sum over the second-to-last inner dim, the groups `G` of
            /// `[.., G, D]` (to `[.., D]`).
            pub fn sum_over_groups(self) -> $kind<T, <S as DropSecondLast>::Output>
            where
                S: DropSecondLast,
            {
                Phantom::phantom()
            }
        }
    )*};
}

sum_over_groups!(Jagged, PerSeq, Padded, Dense);

/// A weight matrix of `x.matmul(w)` and `x.matmul_t(w)` on a `Jagged` or
/// `PerSeq` receiver: a `Dense<T, (R, C)>` shared by every sequence or a
/// `PerSeq<T, (R, C)>`, one matrix per sequence.
pub trait WeightMatrix {
    /// The first dim.
    type Rows;
    /// The second dim.
    type Cols;
}
impl<T, R, C> WeightMatrix for Dense<T, (R, C)> {
    type Rows = R;
    type Cols = C;
}
impl<T, R, C> WeightMatrix for PerSeq<T, (R, C)> {
    type Rows = R;
    type Cols = C;
}

/// `x.matmul(w)` and `x.matmul_t(w)` on the kinds that take a per-sequence
/// weight as well as a dense one.
macro_rules! matmul_per_seq {
    ($($kind:ident),*) => {$(
        impl<T, S> $kind<T, S> {
            /// Times a weight matrix: the last inner dim `K` contracted with
            /// the first of `w: Dense<T, (K, M)>` or `PerSeq<T, (K, M)>` (one
            /// matrix per sequence; `[.., K]` to `[.., M]`), in the
            /// accumulator dtype.
            pub fn matmul<W: WeightMatrix>(self, _w: W) -> $kind<T, <S as ReplaceLast<W::Cols>>::Output>
            where
                S: ReplaceLast<W::Cols>,
            {
                Phantom::phantom()
            }
            /// Times a transposed weight matrix (`x @ w^T`): the last inner
            /// dim `K` contracted with the last of `w: Dense<T, (N, K)>` or
            /// `PerSeq<T, (N, K)>` (`[.., K]` to `[.., N]`), in the
            /// accumulator dtype.
            pub fn matmul_t<W: WeightMatrix>(self, _w: W) -> $kind<T, <S as ReplaceLast<W::Rows>>::Output>
            where
                S: ReplaceLast<W::Rows>,
            {
                Phantom::phantom()
            }
            /// Per group, times a transposed weight matrix: for `x` `[..,
            /// G, K]` and `w: Dense<T, (G, N, K)>`, `x[.., g, :] @ w[g]^T`
            /// for each group `g` (`[.., G, K]` to `[.., G, N]`), in the
            /// accumulator dtype: the contraction `x[..gk], w[gnk] -> ..gn`
            /// (product quantization's sub-vectors against their centroids).
            pub fn matmul_t_grouped<T2, G, N, K>(self, _w: Dense<T2, (G, N, K)>) -> $kind<T, <S as ReplaceLast<N>>::Output>
            where
                S: ReplaceLast<N>,
            {
                Phantom::phantom()
            }
            /// Per group, times a weight matrix: for `x` `[.., G, K]` and
            /// `w: Dense<T, (G, K, N)>`, `x[.., g, :] @ w[g]` for each group
            /// `g` (`[.., G, K]` to `[.., G, N]`), in the accumulator dtype:
            /// the contraction `x[..gk], w[gkn] -> ..gn` (product
            /// quantization's sub-vectors against their transposed
            /// centroids).
            pub fn matmul_grouped<T2, G, K, N>(self, _w: Dense<T2, (G, K, N)>) -> $kind<T, <S as ReplaceLast<N>>::Output>
            where
                S: ReplaceLast<N>,
            {
                Phantom::phantom()
            }
        }
    )*};
}

matmul_per_seq!(Jagged, PerSeq);

/// `x.matmul(w)` on the other kinds whose rows a contraction can keep (not
/// `Padded`: the IR contracts no padded `N` axis), with a dense weight.
macro_rules! matmul {
    ($($kind:ident),*) => {$(
        impl<T, S> $kind<T, S> {
            /// Times a weight matrix: the last inner dim `K` contracted with
            /// the first of `w: Dense<T, (K, M)>` (`[.., K]` to `[.., M]`), in
            /// the accumulator dtype.
            pub fn matmul<T2, K, M>(self, _w: Dense<T2, (K, M)>) -> $kind<T, <S as ReplaceLast<M>>::Output>
            where
                S: ReplaceLast<M>,
            {
                Phantom::phantom()
            }
        }
    )*};
}

matmul!(Pairs, Dense);

/// A body's value returned as the kernel's declared output type `O`: the
/// same kind and shape, in any dtype (the macro checks the dtype: the value's
/// own, or its accumulator dtype rounded to the declared one). The function
/// the macro emits returns its body through [`__output`], so that the phantom
/// types, whose results keep the receiver's dtype where the macro's are in
/// the accumulator dtype (`dot`, `matmul`, positions), never make rustc
/// reject a kernel that the macro accepts.
#[doc(hidden)]
pub trait Output<O> {}

macro_rules! output {
    ($($kind:ident),*) => {$(
        impl<T, T2, S> Output<$kind<T2, S>> for $kind<T, S> {}
    )*};
}
output!(Jagged, PerSeq, Padded, Pairs, Dense);
impl<I> Output<Lengths<I>> for Lengths<I> {}
impl<I> Output<Offsets<I>> for Offsets<I> {}

macro_rules! output_tuple {
    ($($x:ident $o:ident),*) => {
        impl<$($x: Output<$o>, $o),*> Output<($($o,)*)> for ($($x,)*) {}
    };
}
output_tuple!(A OA);
output_tuple!(A OA, B OB);
output_tuple!(A OA, B OB, C OC);
output_tuple!(A OA, B OB, C OC, D OD);
output_tuple!(A OA, B OB, C OC, D OD, E OE);
output_tuple!(A OA, B OB, C OC, D OD, E OE, F OF);
impl<X: Output<O>, O> Output<Option<O>> for Option<X> {}

/// The body of a kernel as its declared output type (see [`Output`]); never
/// called.
#[doc(hidden)]
pub fn __output<O, X: Output<O>>(_body: X) -> O {
    unreachable!("the phantom function of a #[jagged_kernel] is never called")
}

/// Comparisons with a scalar on the left (`window.ge(dist)`, `0.5f32.lt(x)`):
/// the same bool tensor as the tensor's method with the sides swapped.
///
/// `use jagged::dsl::*` brings this trait into scope, so in that module
/// `f32::lt` and friends called as methods (`a.lt(&b)`) resolve here;
/// compare plain numbers there with `<` instead.
pub trait ScalarCompare: Scalar {
    /// `self < other`, elementwise: a bool tensor.
    fn lt<R>(self, _other: R) -> Compared<Self, R>
    where
        Self: Broadcast<R>,
    {
        Phantom::phantom()
    }
    /// `self <= other`, elementwise: a bool tensor.
    fn le<R>(self, _other: R) -> Compared<Self, R>
    where
        Self: Broadcast<R>,
    {
        Phantom::phantom()
    }
    /// `self > other`, elementwise: a bool tensor.
    fn gt<R>(self, _other: R) -> Compared<Self, R>
    where
        Self: Broadcast<R>,
    {
        Phantom::phantom()
    }
    /// `self >= other`, elementwise: a bool tensor.
    fn ge<R>(self, _other: R) -> Compared<Self, R>
    where
        Self: Broadcast<R>,
    {
        Phantom::phantom()
    }
    /// `self == other`, elementwise: a bool tensor.
    fn eq<R>(self, _other: R) -> Compared<Self, R>
    where
        Self: Broadcast<R>,
    {
        Phantom::phantom()
    }
    /// `self != other`, elementwise: a bool tensor.
    fn ne<R>(self, _other: R) -> Compared<Self, R>
    where
        Self: Broadcast<R>,
    {
        Phantom::phantom()
    }
}
impl ScalarCompare for f32 {}
impl ScalarCompare for f64 {}
impl ScalarCompare for i32 {}
impl ScalarCompare for i64 {}
impl ScalarCompare for usize {}

/// `dot` with a named accumulator dtype: `q.dot_acc::<f32>(k)`,
/// `p.dot_acc::<f64>(v)` (the result is in that dtype).
pub trait DotAcc<V> {
    /// The result in the accumulator dtype `U`.
    type Output<U>: Phantom;
    /// Like `dot`, accumulating (and giving its result) in `U`.
    fn dot_acc<U>(self, _other: V) -> Self::Output<U>
    where
        Self: Sized,
    {
        Phantom::phantom()
    }
}

impl<T, S: DropLast, T2, S2> DotAcc<Jagged<T2, S2>> for Jagged<T, S> {
    type Output<U> = Pairs<U, <S as DropLast>::Output>;
}

impl<T, S, T2, S2> DotAcc<Jagged<T2, S2>> for Pairs<T, S> {
    type Output<U> = Jagged<U, S2>;
}

/// The shape without its last dim (the result of contracting it away).
/// The dims after the first: the rows a gathered table gives per index.
pub trait DropFirst {
    /// The remaining dims.
    type Output;
}
impl<A> DropFirst for (A,) {
    type Output = ();
}
impl<A, B> DropFirst for (A, B) {
    type Output = (B,);
}
impl<A, B, C> DropFirst for (A, B, C) {
    type Output = (B, C);
}

/// An integer index tensor of any kind, gathering from a table of dtype `T`
/// and dims `S` (`table.at(index)`): the index's kind, the table's dtype
/// and its dims after the first.
pub trait GatherIndex<T, S> {
    /// The gathered tensor.
    type Output;
}

macro_rules! gather_index {
    ($($kind:ident),*) => {$(
        impl<I, T, S: DropFirst> GatherIndex<T, S> for $kind<I, ()> {
            type Output = $kind<T, <S as DropFirst>::Output>;
        }
    )*};
}
gather_index!(Jagged, PerSeq, Padded, Pairs, Dense);

/// An index with one inner dim `(L,)`: a row per entry, `(L, ..)`.
macro_rules! gather_index_rows {
    ($($kind:ident),*) => {$(
        impl<I, T, S: DropFirst, A> GatherIndex<T, S> for $kind<I, (A,)>
        where
            (A,): Concat<<S as DropFirst>::Output>,
        {
            type Output = $kind<T, <(A,) as Concat<<S as DropFirst>::Output>>::Output>;
        }
    )*};
}
gather_index_rows!(Jagged, PerSeq, Padded, Pairs, Dense);

/// The index of `x.take_features(index)` on a receiver `R`: an integer
/// tensor of `R`'s kind (a pick per row) or a `Dense` one (the same picks
/// for every row), whose inner dims come first in the result.
pub trait FeatureIndex<R> {
    /// The taken tensor.
    type Output;
}

macro_rules! take_features {
    ($($kind:ident),*) => {$(
        impl<I, T, S: DropFirst, E> FeatureIndex<$kind<T, S>> for $kind<I, E>
        where
            E: Concat<<S as DropFirst>::Output>,
        {
            type Output = $kind<T, <E as Concat<<S as DropFirst>::Output>>::Output>;
        }
        impl<T, S> $kind<T, S> {
            /// Entries of the first inner dim picked by an integer index
            /// within each row (`take_along_axis`): `(A, R..)` at an index
            /// with inner dims `(E..)` gives `(E.., R..)`, 0 where the index
            /// is outside `0..A`.
            pub fn take_features<X: FeatureIndex<Self>>(self, _index: X) -> X::Output
            where
                X::Output: Phantom,
            {
                Phantom::phantom()
            }
        }
    )*};
}
take_features!(Jagged, PerSeq, Padded, Dense);

/// A dense index picks the same entries in every row.
macro_rules! take_features_dense {
    ($($kind:ident),*) => {$(
        impl<I, T, S: DropFirst, E> FeatureIndex<$kind<T, S>> for Dense<I, E>
        where
            E: Concat<<S as DropFirst>::Output>,
        {
            type Output = $kind<T, <E as Concat<<S as DropFirst>::Output>>::Output>;
        }
    )*};
}
take_features_dense!(Jagged, PerSeq, Padded);

impl<T, S> Dense<T, S> {
    /// The rows of this table `[K, ..]` at an integer index tensor (0 where
    /// the index is outside `0..K`): a learned bias per relative position is
    /// `bias.at((s.query_pos() - s.key_pos()).max(-w).min(w).cast::<i64>() + w)`.
    pub fn at<X: GatherIndex<T, S>>(self, _index: X) -> X::Output
    where
        X::Output: Phantom,
    {
        Phantom::phantom()
    }
}

pub trait DropLast {
    /// The remaining dims.
    type Output;
}
impl<A> DropLast for (A,) {
    type Output = ();
}
impl<A, B> DropLast for (A, B) {
    type Output = (A,);
}
impl<A, B, C> DropLast for (A, B, C) {
    type Output = (A, B);
}

/// The shape without its second-to-last dim (the result of `sum_over_groups`).
pub trait DropSecondLast {
    /// The remaining dims.
    type Output;
}
impl<A, B> DropSecondLast for (A, B) {
    type Output = (B,);
}
impl<A, B, C> DropSecondLast for (A, B, C) {
    type Output = (A, C);
}

/// The shape with its last dim replaced by `M` (the result of `matmul`).
pub trait ReplaceLast<M> {
    /// The new dims.
    type Output;
}
impl<A, M> ReplaceLast<M> for (A,) {
    type Output = (M,);
}
impl<A, B, M> ReplaceLast<M> for (A, B) {
    type Output = (A, M);
}
impl<A, B, C, M> ReplaceLast<M> for (A, B, C) {
    type Output = (A, B, M);
}

/// Inner dims one after the other (the result of `outer_sum_over_seq`).
pub trait Concat<S2> {
    /// The dims of `Self` then those of `S2`.
    type Output;
}
macro_rules! concat_shapes {
    ($(($($a:ident),*) + ($($b:ident),*)),* $(,)?) => {$(
        impl<$($a,)* $($b),*> Concat<($($b,)*)> for ($($a,)*) {
            type Output = ($($a,)* $($b,)*);
        }
    )*};
}
concat_shapes!(
    () + (),
    () + (C),
    () + (C, D),
    (A) + (),
    (A) + (C),
    (A) + (C, D),
    (A, B) + (),
    (A, B) + (C),
    (A, B) + (C, D),
);

impl<T, S> Jagged<T, S> {
    /// `sum_{i < n_b} x[i] (x) y[i]` over each sequence's rows: with `x:
    /// Jagged<T, (M,)>` and `y: Jagged<T, (P,)>`, `x_b^T y_b`, a `PerSeq<T,
    /// (M, P)>` (in general the inner dims of `x` then those of `y`), in the
    /// accumulator dtype.
    pub fn outer_sum_over_seq<T2, S2>(
        self,
        _y: Jagged<T2, S2>,
    ) -> PerSeq<T, <S as Concat<S2>>::Output>
    where
        S: Concat<S2>,
    {
        Phantom::phantom()
    }
    /// The place of each row in its sequence's stable sort, smallest
    /// first (i32; ties to the lower row, a NaN first): `rank < k` keeps
    /// each sequence's `k` smallest rows.
    pub fn ascending_rank_over_seq(self) -> Jagged<i32, S> {
        Phantom::phantom()
    }
    /// The place of each row in its sequence's stable sort, largest first
    /// (i32; ties to the lower row, a NaN first): `rank < k` keeps each
    /// sequence's `k` highest scores.
    pub fn descending_rank_over_seq(self) -> Jagged<i32, S> {
        Phantom::phantom()
    }
    /// Row `i` reads row `i + by` of its own sequence, 0 past the
    /// sequence's ends (`by` an integer literal: `t - t.shift_rows(-1)` is
    /// the gap to the previous event).
    pub fn shift_rows(self, _by: i64) -> Self {
        Phantom::phantom()
    }
    /// Sum over the rows `i < n_b` of each sequence (0 when empty).
    pub fn sum_over_seq(self) -> PerSeq<T, S> {
        Phantom::phantom()
    }
    /// Mean over the rows of each sequence: `sum / max(n_b, 1)`.
    pub fn mean_over_seq(self) -> PerSeq<T, S> {
        Phantom::phantom()
    }
    /// Maximum over the rows of each sequence (0 when empty).
    pub fn max_over_seq(self) -> PerSeq<T, S> {
        Phantom::phantom()
    }
    /// `log sum exp` over the rows of each sequence (0 when empty).
    pub fn logsumexp_over_seq(self) -> PerSeq<T, S> {
        Phantom::phantom()
    }
    /// Softmax over the rows of each sequence, per column.
    pub fn softmax_over_seq(self) -> Self {
        self
    }
    /// Padded `[B, N, S...]`, zeros past each sequence.
    pub fn to_padded(self) -> Padded<T, S> {
        Phantom::phantom()
    }
    /// Padded `[B, N, S...]`, `value` past each sequence.
    pub fn to_padded_or<V>(self, _value: V) -> Padded<T, S> {
        Phantom::phantom()
    }
    /// Per sequence, `self[i] . other[j]` over the last dim: attention scores.
    pub fn dot<T2, S2>(self, _other: Jagged<T2, S2>) -> Pairs<T, <S as DropLast>::Output>
    where
        S: DropLast,
    {
        Phantom::phantom()
    }
    /// The rows whose `mask` is set, in order, on new (compacted) sequences.
    pub fn compact<M>(self, _mask: Jagged<M>) -> Self {
        self
    }
    /// The offsets of this tensor's sequences, in the kernel's offsets dtype.
    pub fn offsets<I>(self) -> Offsets<I> {
        Phantom::phantom()
    }
    /// Each row's index `i` within its sequence (0 to `n_b - 1`), in the
    /// accumulator dtype (f32; f64 for f64).
    pub fn row_pos(self) -> Jagged<T> {
        Phantom::phantom()
    }
    /// The length `n_b` of each sequence (truncated to `max_len` when the
    /// kernel has one), in the accumulator dtype (f32; f64 for f64).
    pub fn seq_len(self) -> PerSeq<T> {
        Phantom::phantom()
    }
}

impl<T, S> Pairs<T, S> {
    /// The strict upper triangle, pairs `i < j < n_b`, packed row-major on
    /// new sequences of `n_b (n_b - 1) / 2` rows each (`.offsets()` gives
    /// theirs); the `[n_b, n_b]` block is never stored.
    pub fn pack_triu(self) -> Jagged<T, S> {
        Phantom::phantom()
    }
    /// Softmax over the key rows `j < n_b`.
    pub fn softmax_over_keys(self) -> Self {
        self
    }
    /// Sum over the key rows.
    pub fn sum_over_keys(self) -> Jagged<T, S> {
        Phantom::phantom()
    }
    /// `log sum exp` over the key rows.
    pub fn logsumexp_over_keys(self) -> Jagged<T, S> {
        Phantom::phantom()
    }
    /// Zero where the key row comes after the query row (`j > i`).
    pub fn causal(self) -> Self {
        self
    }
    /// `value` where the key row comes after the query row (`j > i`); with
    /// `f32::NEG_INFINITY` before a softmax.
    pub fn causal_or<V>(self, _value: V) -> Self {
        self
    }
    /// Zero where the key row comes before the query row (`j < i`).
    pub fn anticausal(self) -> Self {
        self
    }
    /// `value` where the key row comes before the query row (`j < i`).
    pub fn anticausal_or<V>(self, _value: V) -> Self {
        self
    }
    /// Per sequence, `sum_j self[i, j] * v[j]`: contracts the key rows.
    pub fn dot<T2, S2>(self, _v: Jagged<T2, S2>) -> Jagged<T2, S2> {
        Phantom::phantom()
    }
    /// The query row `i` of each pair, in the accumulator dtype (f32; f64 for f64).
    pub fn query_pos(self) -> Pairs<T> {
        Phantom::phantom()
    }
    /// The key row `j` of each pair, in the accumulator dtype (f32; f64 for f64).
    pub fn key_pos(self) -> Pairs<T> {
        Phantom::phantom()
    }
    /// The length `n_b` of each sequence, in the accumulator dtype.
    pub fn seq_len(self) -> PerSeq<T> {
        Phantom::phantom()
    }
}

impl<T, S> Padded<T, S> {
    /// The rows `i < min(L_b, N)` of each sequence, as a jagged tensor on the
    /// kernel's offsets.
    pub fn to_jagged(self) -> Jagged<T, S> {
        Phantom::phantom()
    }
    /// Each padded row's index `i` (0 to `N - 1`), in the accumulator dtype.
    pub fn row_pos(self) -> Padded<T> {
        Phantom::phantom()
    }
}

impl<I> Lengths<I> {
    /// Offsets from lengths: `[0, l0, l0 + l1, ...]`.
    pub fn complete_cumsum(self) -> Offsets<I> {
        Phantom::phantom()
    }
}

/// `e^x`, elementwise.
pub fn exp<X: Phantom>(x: X) -> X {
    x
}

/// `ln x`, elementwise.
pub fn log<X: Phantom>(x: X) -> X {
    x
}

/// `x / (1 + e^-x)`, elementwise.
pub fn silu<X: Phantom>(x: X) -> X {
    x
}

/// `sqrt(x)`, elementwise.
pub fn sqrt<X: Phantom>(x: X) -> X {
    x
}

/// `1 / sqrt(x)`, elementwise.
pub fn rsqrt<X: Phantom>(x: X) -> X {
    x
}

/// `|x|`, elementwise.
pub fn abs<X: Phantom>(x: X) -> X {
    x
}

/// `max(x, 0)`, elementwise (NaN stays NaN).
pub fn relu<X: Phantom>(x: X) -> X {
    x
}

/// `1 / (1 + e^-x)`, elementwise.
pub fn sigmoid<X: Phantom>(x: X) -> X {
    x
}

/// `tanh x`, elementwise.
pub fn tanh<X: Phantom>(x: X) -> X {
    x
}

/// `x^p` with a scalar exponent, elementwise (see the method `powf`).
pub fn powf<X: Phantom, P: Scalar>(x: X, _p: P) -> X {
    x
}

/// The larger of `a` and `b`, elementwise (broadcast).
pub fn max<A: Broadcast<B>, B>(_a: A, _b: B) -> A::Output {
    Phantom::phantom()
}

/// The smaller of `a` and `b`, elementwise (broadcast).
pub fn min<A: Broadcast<B>, B>(_a: A, _b: B) -> A::Output {
    Phantom::phantom()
}

/// `cond ? on_true : on_false`, elementwise (broadcast); `cond` is a bool tensor.
pub fn select<C, A: Broadcast<B>, B>(_cond: C, _on_true: A, _on_false: B) -> A::Output {
    Phantom::phantom()
}

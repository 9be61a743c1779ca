//! What the runtime needs to launch a compiled module: per kernel its entry
//! name, block size, a grid rule evaluated from run-time sizes, and how each
//! parameter is bound (a graph buffer, a scratch buffer or a run-time size).

use std::fmt;

use crate::kernel::Swizzle;
use crate::spec::{Arch, DType};

/// The run-time sizes every rule is evaluated against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RunSizes {
    /// Number of sequences `B`.
    pub batch: u64,
    /// Total number of rows `T` (`offsets[B]`).
    pub total_rows: u64,
    /// The `max_len` attribute (or the dense `N` of `dense_to_jagged`).
    pub max_len: u64,
}

/// An integer expression over the run-time sizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SizeExpr {
    /// A constant.
    Const(u64),
    /// `B`
    Batch,
    /// `T`
    TotalRows,
    /// `max_len`
    MaxLen,
    /// Sum.
    Add(Box<SizeExpr>, Box<SizeExpr>),
    /// Product.
    Mul(Box<SizeExpr>, Box<SizeExpr>),
    /// `ceil(a / k)`.
    CeilDiv(Box<SizeExpr>, u64),
}

impl SizeExpr {
    /// `ceil(a / k)`
    pub fn ceil_div(a: SizeExpr, k: u64) -> SizeExpr {
        SizeExpr::CeilDiv(Box::new(a), k)
    }

    /// The value for `sizes` (saturating: no overflow panics).
    pub fn eval(&self, sizes: &RunSizes) -> u64 {
        match self {
            SizeExpr::Const(v) => *v,
            SizeExpr::Batch => sizes.batch,
            SizeExpr::TotalRows => sizes.total_rows,
            SizeExpr::MaxLen => sizes.max_len,
            SizeExpr::Add(a, b) => a.eval(sizes).saturating_add(b.eval(sizes)),
            SizeExpr::Mul(a, b) => a.eval(sizes).saturating_mul(b.eval(sizes)),
            SizeExpr::CeilDiv(a, k) => a.eval(sizes).div_ceil((*k).max(1)),
        }
    }
}

impl std::ops::Add for SizeExpr {
    type Output = SizeExpr;

    fn add(self, rhs: SizeExpr) -> SizeExpr {
        SizeExpr::Add(Box::new(self), Box::new(rhs))
    }
}

impl std::ops::Mul for SizeExpr {
    type Output = SizeExpr;

    fn mul(self, rhs: SizeExpr) -> SizeExpr {
        SizeExpr::Mul(Box::new(self), Box::new(rhs))
    }
}

impl fmt::Display for SizeExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeExpr::Const(v) => write!(f, "{v}"),
            SizeExpr::Batch => f.write_str("B"),
            SizeExpr::TotalRows => f.write_str("T"),
            SizeExpr::MaxLen => f.write_str("max_len"),
            SizeExpr::Add(a, b) => write!(f, "({a} + {b})"),
            SizeExpr::Mul(a, b) => write!(f, "{a}*{b}"),
            SizeExpr::CeilDiv(a, k) => write!(f, "ceil({a}/{k})"),
        }
    }
}

/// How many CTAs to launch: `clamp(ceil(items / items_per_block), 1, max_blocks)`.
/// Kernels loop grid-stride, so any clamp is correct.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GridRule {
    /// Units of work.
    pub items: SizeExpr,
    /// Units one CTA covers per grid-stride iteration.
    pub items_per_block: u64,
    /// Upper bound on the grid (x dimension).
    pub max_blocks: u32,
}

impl GridRule {
    /// The grid size for `sizes` (always >= 1, <= `max_blocks`).
    pub fn eval(&self, sizes: &RunSizes) -> u32 {
        let blocks = self.items.eval(sizes).div_ceil(self.items_per_block.max(1));
        let capped = blocks.clamp(1, u64::from(self.max_blocks.max(1)));
        u32::try_from(capped).unwrap_or(u32::MAX)
    }
}

impl fmt::Display for GridRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "clamp(ceil({}/{}), 1, {})",
            self.items, self.items_per_block, self.max_blocks
        )
    }
}

/// What a kernel parameter is bound to at launch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParamBinding {
    /// Device pointer of graph input `i` (in the op's input order).
    Input(usize),
    /// Device pointer of graph output `i`.
    Output(usize),
    /// Device pointer of scratch buffer `i` of [`CompiledKernel::scratch`].
    Scratch(usize),
    /// A u64 scalar: the value of the expression.
    Size(SizeExpr),
    /// An f32 scalar: the run-time value of the graph attribute of this name
    /// (e.g. `padding_value`).
    FloatAttr(String),
    /// A TMA tensor map over a graph input, passed by value (a
    /// `.param .align 64 .b8 name[128]` parameter): the runtime encodes it
    /// from the input's device address and the map's run-time dimensions.
    TensorMap(TensorMapBinding),
}

/// A tiled tensor map over graph input `input`, viewed as a packed row-major
/// array of `dims` (innermost first): `cuTensorMapEncodeTiled` with the
/// packed byte strides of `dtype`, element strides 1, no interleave, no L2
/// promotion, and zeros for the elements of a box outside the array.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorMapBinding {
    /// The graph input (in the op's input order) whose buffer the map covers.
    pub input: usize,
    /// Element type of the input.
    pub dtype: DType,
    /// The array's dimensions, innermost first.
    pub dims: Vec<SizeExpr>,
    /// The box one copy moves, innermost first (one entry per dimension).
    pub box_dim: Vec<u32>,
    /// How the box's rows are permuted in shared memory
    /// ([`Swizzle::None`]: not at all).
    pub swizzle: Swizzle,
}

impl TensorMapBinding {
    /// The dimensions for `sizes`, innermost first, as the map is encoded:
    /// a dimension of 0 (`T = 0`) is 1, since `cuTensorMapEncodeTiled`
    /// takes no empty dimension (the kernel copies nothing from an empty
    /// array).
    pub fn eval_dims(&self, sizes: &RunSizes) -> Vec<u64> {
        self.dims.iter().map(|d| d.eval(sizes).max(1)).collect()
    }

    /// The byte strides of dimensions 1.. of the packed array of `dims`
    /// (saturating).
    pub fn packed_strides(&self, dims: &[u64]) -> Vec<u64> {
        let mut stride = self.dtype.size() as u64;
        dims.iter()
            .take(dims.len().saturating_sub(1))
            .map(|d| {
                stride = stride.saturating_mul(*d);
                stride
            })
            .collect()
    }
}

impl fmt::Display for TensorMapBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |parts: Vec<String>| parts.join(", ");
        write!(
            f,
            "tensor map input{} {} [{}] box [{}] swizzle {}",
            self.input,
            self.dtype.name(),
            join(self.dims.iter().map(ToString::to_string).collect()),
            join(self.box_dim.iter().map(ToString::to_string).collect()),
            swizzle_bytes(self.swizzle)
        )
    }
}

/// The swizzle span in bytes (0: none), as the tensor-map text forms write it.
pub fn swizzle_bytes(swizzle: Swizzle) -> u32 {
    match swizzle {
        Swizzle::None => 0,
        Swizzle::B32 => 32,
        Swizzle::B64 => 64,
        Swizzle::B128 => 128,
    }
}

/// The swizzle of a span of `bytes` (0: none), the inverse of [`swizzle_bytes`].
pub fn swizzle_of_bytes(bytes: u32) -> Option<Swizzle> {
    Some(match bytes {
        0 => Swizzle::None,
        32 => Swizzle::B32,
        64 => Swizzle::B64,
        128 => Swizzle::B128,
        _ => return None,
    })
}

impl fmt::Display for ParamBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamBinding::Input(i) => write!(f, "input{i}"),
            ParamBinding::Output(i) => write!(f, "output{i}"),
            ParamBinding::Scratch(i) => write!(f, "scratch{i}"),
            ParamBinding::Size(e) => write!(f, "u64 {e}"),
            ParamBinding::FloatAttr(name) => write!(f, "f32 attr {name}"),
            ParamBinding::TensorMap(map) => write!(f, "{map}"),
        }
    }
}

/// One kernel launch of a compiled module.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Launch {
    /// The `.entry` name in the PTX.
    pub entry: String,
    /// Threads per CTA (x only).
    pub block: u32,
    /// Dynamic shared memory in bytes.
    pub dynamic_shared_bytes: u32,
    /// Grid size rule.
    pub grid: GridRule,
    /// Parameter bindings, in PTX parameter order.
    pub params: Vec<ParamBinding>,
}

impl Launch {
    /// `[grid, 1, 1]` for `sizes`.
    pub fn grid_dims(&self, sizes: &RunSizes) -> [u32; 3] {
        [self.grid.eval(sizes), 1, 1]
    }

    /// `[block, 1, 1]`.
    pub fn block_dims(&self) -> [u32; 3] {
        [self.block, 1, 1]
    }
}

/// A device buffer the module needs besides the graph's inputs and outputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScratchBuffer {
    /// Size in bytes.
    pub bytes: SizeExpr,
}

/// An output buffer the runtime allocates before the launches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutputBuffer {
    /// Element type.
    pub elem: DType,
    /// Number of elements to allocate. For data-dependent outputs
    /// (`masked_select_jagged`) this is an upper bound; see `used_rows_from`.
    pub elems: SizeExpr,
    /// For data-dependent outputs: the index of the output (an offsets
    /// array) whose last element is the number of rows actually written.
    pub used_rows_from: Option<usize>,
}

/// The result of [`crate::compile()`]: PTX text plus launch metadata.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CompiledKernel {
    /// The PTX module (all entries).
    pub ptx: String,
    /// The target the PTX was printed for.
    pub arch: Arch,
    /// Launches, run in this order on one stream.
    pub launches: Vec<Launch>,
    /// Scratch buffers (need no initialization).
    pub scratch: Vec<ScratchBuffer>,
    /// Outputs, in the op's output order.
    pub outputs: Vec<OutputBuffer>,
}

impl fmt::Display for Launch {
    /// `entry<<<grid rule, block>>>(params...)`, one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<String> = self.params.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{}<<<{}, {}, {}>>>({})",
            self.entry,
            self.grid,
            self.block,
            self.dynamic_shared_bytes,
            params.join(", ")
        )
    }
}

impl fmt::Display for CompiledKernel {
    /// The launch plan (not the PTX): outputs, scratch buffers, launches.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "target {}, {} bytes of PTX", self.arch, self.ptx.len())?;
        for (i, o) in self.outputs.iter().enumerate() {
            write!(f, "output{i}: {} x {}", o.elems, o.elem)?;
            if let Some(k) = o.used_rows_from {
                write!(f, " (capacity; rows used = output{k}[B])")?;
            }
            writeln!(f)?;
        }
        for (i, s) in self.scratch.iter().enumerate() {
            writeln!(f, "scratch{i}: {} bytes", s.bytes)?;
        }
        for l in &self.launches {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_rules_clamp_to_one_and_the_limit() {
        let rule = GridRule {
            items: SizeExpr::TotalRows * SizeExpr::Const(16),
            items_per_block: 256,
            max_blocks: 1000,
        };
        let sizes = |t| RunSizes {
            batch: 1,
            total_rows: t,
            max_len: 1,
        };
        assert_eq!(rule.eval(&sizes(0)), 1);
        assert_eq!(rule.eval(&sizes(16)), 1);
        assert_eq!(rule.eval(&sizes(17)), 2);
        assert_eq!(rule.eval(&sizes(1 << 40)), 1000);
        assert_eq!(rule.to_string(), "clamp(ceil(T*16/256), 1, 1000)");
    }

    #[test]
    fn size_expressions_saturate() {
        let e = SizeExpr::ceil_div(SizeExpr::Batch + SizeExpr::Const(1), 4) * SizeExpr::MaxLen;
        let s = RunSizes {
            batch: 6,
            total_rows: 0,
            max_len: 3,
        };
        assert_eq!(e.eval(&s), 6);
        let huge = SizeExpr::Const(u64::MAX) * SizeExpr::Const(2);
        assert_eq!(huge.eval(&s), u64::MAX);
    }
}

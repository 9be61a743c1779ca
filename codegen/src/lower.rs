//! From a primitive op and a [`Spec`] to a [`CompiledKernel`]: picks the
//! templates, names the entries, prints the PTX and collects the launch
//! metadata.

use crate::error::CodegenError;
use crate::kernel::KernelModule;
use crate::launch::{CompiledKernel, Launch, OutputBuffer, ScratchBuffer, SizeExpr};
use crate::spec::{DType, Spec};
use crate::templates::Plan;
use crate::templates::map::{MapDesc, MapExpr, MapOperand, MapSource, map_kernel};
use crate::templates::pad::{PadDesc, pad_kernel};
use crate::templates::scan::{CompactDesc, compact_kernels, scan_kernels, tile_sums_bytes};
use crate::templates::segment::{GroupSize, ReduceKind, SegmentDesc, SegmentOp, segment_kernel};
use crate::{ptx, templates};

/// The builtin primitives the code generator implements, with their static
/// attributes. Input / output numbering follows OPS.md.
#[derive(Clone, Debug, PartialEq)]
pub enum Primitive {
    /// `complete_cumsum(lengths [B]) -> offsets [B+1]`.
    CompleteCumsum,
    /// `jagged_to_padded_dense(values, offsets) -> dense [B, max_len, W]`
    /// (the `padding_value` attribute is a kernel parameter).
    JaggedToPaddedDense,
    /// `dense_to_jagged(dense [B, N, W], offsets) -> values [T, W]` (`N` is the
    /// run-time `max_len`).
    DenseToJagged,
    /// A pointwise map over jagged and dense operands into a jagged output
    /// (`jagged_dense_elementwise_mul` is `Mul(values, dense)`).
    Map {
        /// Operands (which inputs, jagged or dense).
        operands: Vec<MapOperand>,
        /// Input index of the offsets.
        offsets_input: usize,
        /// The expression.
        expr: MapExpr,
    },
    /// `jagged_reduce(values, offsets) -> out [B, W]`.
    JaggedReduce(ReduceKind),
    /// `jagged_softmax(values, offsets) -> values [T, W]`.
    JaggedSoftmax,
    /// `masked_select_jagged(values, offsets, mask) -> (values, offsets)`.
    MaskedSelectJagged,
    /// Fused flash attention `(q, k, v, offsets) -> (out[, lse])` (see
    /// [`crate::templates::attention_graph`]).
    Attention(crate::templates::attention_graph::AttentionPattern),
}

impl Primitive {
    /// `jagged_dense_elementwise_mul` (inputs: values, offsets, dense).
    pub fn jagged_dense_elementwise_mul() -> Primitive {
        Primitive::Map {
            operands: vec![
                MapOperand {
                    source: MapSource::Jagged,
                    input: 0,
                },
                MapOperand {
                    source: MapSource::Dense,
                    input: 2,
                },
            ],
            offsets_input: 1,
            expr: MapExpr::Binary(
                jagged_ir::BinaryOp::Mul,
                Box::new(MapExpr::Operand(0)),
                Box::new(MapExpr::Operand(1)),
            ),
        }
    }

    /// A short name used as the entry-name prefix.
    pub fn name(&self) -> &'static str {
        match self {
            Primitive::CompleteCumsum => "complete_cumsum",
            Primitive::JaggedToPaddedDense => "jagged_to_padded_dense",
            Primitive::DenseToJagged => "dense_to_jagged",
            Primitive::Map { .. } => "jagged_map",
            Primitive::JaggedReduce(_) => "jagged_reduce",
            Primitive::JaggedSoftmax => "jagged_softmax",
            Primitive::MaskedSelectJagged => "masked_select_jagged",
            Primitive::Attention(_) => "flash_attention",
        }
    }
}

/// The entry-name prefix for a primitive under a spec (stable and readable).
fn entry_prefix(p: &Primitive, spec: &Spec) -> String {
    let inner: Vec<String> = spec.inner.iter().map(ToString::to_string).collect();
    let mut name = format!(
        "jg_{}_{}_{}_w{}_n{}",
        p.name(),
        spec.dtype,
        spec.index,
        if inner.is_empty() {
            "1".to_string()
        } else {
            inner.join("x")
        },
        spec.max_len_bucket
    );
    if let Primitive::JaggedReduce(kind) = p {
        name.push_str(match kind {
            ReduceKind::Sum => "_sum",
            ReduceKind::Mean => "_mean",
            ReduceKind::Max => "_max",
        });
    }
    name
}

/// A lowered op before printing: its kernels and their launch metadata.
/// The general path adds a fast path's kernels to its own module this way.
pub struct Lowered {
    /// The kernels.
    pub module: KernelModule,
    /// Launches, in order, with parameters bound to the op's buffers.
    pub launches: Vec<Launch>,
    /// Scratch buffers.
    pub scratch: Vec<ScratchBuffer>,
    /// Outputs, in the op's output order.
    pub outputs: Vec<OutputBuffer>,
}

impl Lowered {
    /// Prints the PTX of the module for `arch`.
    pub fn print(self, arch: crate::spec::Arch) -> Result<CompiledKernel, CodegenError> {
        let ptx = ptx::write_string(&self.module, &ptx::Options { arch })?;
        Ok(CompiledKernel {
            ptx,
            arch,
            launches: self.launches,
            scratch: self.scratch,
            outputs: self.outputs,
        })
    }
}

/// Generates the module and launch metadata of `p` for `spec`.
pub fn lower(p: &Primitive, spec: &Spec) -> Result<CompiledKernel, CodegenError> {
    lower_module(p, spec)?.print(spec.arch)
}

/// [`lower`], before printing.
pub fn lower_module(p: &Primitive, spec: &Spec) -> Result<Lowered, CodegenError> {
    check_spec(p, spec)?;
    let name = entry_prefix(p, spec);
    let width = spec.row_width();
    let (dtype, index) = (spec.dtype, spec.index);
    let rows_w = |rows: SizeExpr| rows * SizeExpr::Const(width);
    let chunks = templates::chunking(width, dtype).chunks;
    let map_group = GroupSize::for_items(u64::from(spec.max_len_bucket) * chunks);
    // One map kernel into a jagged `[T, W]` output.
    let map = |name, operands, offsets_input, expr| {
        let desc = MapDesc {
            name,
            operands,
            offsets_input,
            expr,
            width,
            dtype,
            index,
            group: map_group,
        };
        (
            vec![map_kernel(&desc)],
            Vec::new(),
            vec![output(dtype, rows_w(SizeExpr::TotalRows))],
        )
    };
    let (plans, scratch, outputs): (Vec<Plan>, Vec<ScratchBuffer>, Vec<OutputBuffer>) = match p {
        Primitive::CompleteCumsum => (
            scan_kernels(
                &name,
                crate::launch::ParamBinding::Input(0),
                index,
                crate::launch::ParamBinding::Output(0),
                index,
                crate::launch::ParamBinding::Scratch(0),
                SizeExpr::Batch,
            ),
            vec![ScratchBuffer {
                bytes: tile_sums_bytes(SizeExpr::Batch),
            }],
            vec![output(index, SizeExpr::Batch + SizeExpr::Const(1))],
        ),
        Primitive::JaggedToPaddedDense => (
            vec![pad_kernel(&PadDesc {
                name,
                width,
                dtype,
                index,
            })],
            Vec::new(),
            vec![output(dtype, rows_w(SizeExpr::Batch * SizeExpr::MaxLen))],
        ),
        // dense_to_jagged maps the dense input, read at each jagged row.
        Primitive::DenseToJagged => map(
            name,
            vec![MapOperand {
                source: MapSource::Dense,
                input: 0,
            }],
            1,
            MapExpr::Operand(0),
        ),
        Primitive::Map {
            operands,
            offsets_input,
            expr,
        } => map(name, operands.clone(), *offsets_input, expr.clone()),
        Primitive::JaggedReduce(kind) => (
            vec![segment_kernel(&SegmentDesc {
                name,
                op: SegmentOp::Reduce(*kind),
                width,
                group: GroupSize::for_bucket(spec.max_len_bucket),
                dtype,
                index,
            })],
            Vec::new(),
            vec![output(dtype, rows_w(SizeExpr::Batch))],
        ),
        Primitive::JaggedSoftmax => (
            vec![segment_kernel(&SegmentDesc {
                name,
                op: SegmentOp::Softmax,
                width,
                group: GroupSize::for_bucket(spec.max_len_bucket),
                dtype,
                index,
            })],
            Vec::new(),
            vec![output(dtype, rows_w(SizeExpr::TotalRows))],
        ),
        Primitive::Attention(pattern) => {
            return templates::attention::lower_attention(pattern, spec);
        }
        Primitive::MaskedSelectJagged => (
            compact_kernels(&CompactDesc {
                name,
                width,
                dtype,
                index,
            }),
            vec![
                ScratchBuffer {
                    bytes: tile_sums_bytes(SizeExpr::TotalRows),
                },
                ScratchBuffer {
                    bytes: ((SizeExpr::TotalRows + SizeExpr::Const(1)) * SizeExpr::Const(8)),
                },
            ],
            vec![
                OutputBuffer {
                    elem: dtype,
                    elems: rows_w(SizeExpr::TotalRows),
                    used_rows_from: Some(1),
                },
                output(index, SizeExpr::Batch + SizeExpr::Const(1)),
            ],
        ),
    };
    Ok(finish(plans, scratch, outputs))
}

fn output(elem: DType, elems: SizeExpr) -> OutputBuffer {
    OutputBuffer {
        elem,
        elems,
        used_rows_from: None,
    }
}

fn check_spec(p: &Primitive, spec: &Spec) -> Result<(), CodegenError> {
    if !matches!(spec.index, DType::I32 | DType::I64) {
        return Err(CodegenError::Unsupported(format!(
            "offsets dtype {} (expected i32 or i64)",
            spec.index
        )));
    }
    let float_values = matches!(spec.dtype, DType::F32 | DType::F16 | DType::BF16);
    if *p != Primitive::CompleteCumsum && !float_values {
        return Err(CodegenError::Unsupported(format!(
            "{}: values dtype {} (expected f32, f16 or bf16)",
            p.name(),
            spec.dtype
        )));
    }
    if spec.inner.contains(&0) {
        return Err(CodegenError::Unsupported(format!(
            "{}: zero inner dim in {:?}",
            p.name(),
            spec.inner
        )));
    }
    Ok(())
}

fn finish(plans: Vec<Plan>, scratch: Vec<ScratchBuffer>, outputs: Vec<OutputBuffer>) -> Lowered {
    let mut module = KernelModule::default();
    let mut launches = Vec::new();
    for plan in plans {
        launches.push(Launch {
            entry: plan.kernel.name.clone(),
            block: plan.kernel.block_threads,
            dynamic_shared_bytes: 0,
            grid: plan.grid,
            params: plan.bindings,
        });
        module.kernels.push(plan.kernel);
    }
    debug_assert!(launches.iter().all(|l| l.block == templates::BLOCK_THREADS));
    Lowered {
        module,
        launches,
        scratch,
        outputs,
    }
}

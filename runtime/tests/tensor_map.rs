//! `ParamBinding::TensorMap` end to end on the emulator: the launcher encodes
//! a TMA tensor map over a graph input from the binding's run-time
//! dimensions (the values `[T, 128]` bf16 viewed as `{128, T}`, boxes of
//! `{64, 16}` with the 128-byte swizzle, the layout of the sm_90a attention
//! kernel's K and V tiles), a kernel loads each 16-row block by two
//! `cp.async.bulk.tensor` copies waited for on an mbarrier and writes it back
//! unswizzled; rows past `T` read as zeros and are not written, and `T = 0`
//! encodes a one-row map the kernel copies nothing from. A target on
//! device addresses the runtime does not own (the external path) encodes
//! its maps on the host over those addresses; one that does not implement
//! `tensor_map` refuses the binding with a typed error.

use std::collections::BTreeMap;
use std::sync::Arc;

use jagged_codegen::kernel::Swizzle;
use jagged_codegen::{
    Arch, CompiledKernel, GridRule, Launch, OutputBuffer, ParamBinding, RunSizes, SizeExpr,
    TensorMapBinding,
};
use jagged_emu::TensorMap;
use jagged_emu::tensormap::{
    TensorMapDataType, TensorMapFloatOobFill, TensorMapInterleave, TensorMapL2Promotion,
    TensorMapSwizzle,
};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrValue, DType, DenseTensor, Graph};
use jagged_runtime::{
    BackendKind, BufferRole, DeviceBuffer, GraphRunError, KernelArg, KernelCache, LaunchDims,
    LaunchTarget, Runtime, TensorMapBytes, TiledMap, launch_plan,
};

/// Columns of the values (`H D`: two 64-column boxes).
const COLS: usize = 128;
/// Rows of a box, and of a CTA's block.
const BOX_ROWS: u32 = 16;

/// One CTA per 16-row block: two boxes of 64 columns (2048 bytes each, 128-byte
/// swizzle), then 256 16-byte chunks, two per thread, unswizzled to `out`.
const PTX: &str = r#"
.version 8.3
.target sm_90a
.address_size 64

.visible .entry tmap_copy(
    .param .align 64 .b8 tmap_copy_map[128],
    .param .u64 tmap_copy_out,
    .param .u64 tmap_copy_rows
)
{
    .reg .pred %p<8>;
    .reg .b32 %r<40>;
    .reg .b64 %rd<16>;
    .shared .align 1024 .b8 smem[4096];
    .shared .align 8 .b64 bar;
    mov.u32 %r0, %tid.x;
    mov.u32 %r1, %ctaid.x;
    ld.param.u64 %rd1, [tmap_copy_out];
    ld.param.u64 %rd2, [tmap_copy_rows];
    // No copy from past the end (none at all where T = 0).
    shl.b32 %r5, %r1, 4;
    cvt.u64.u32 %rd8, %r5;
    setp.ge.u64 %p7, %rd8, %rd2;
    @%p7 bra DONE;
    mov.b64 %rd4, tmap_copy_map;
    cvta.param.u64 %rd3, %rd4;
    setp.ne.u32 %p1, %r0, 0;
    @!%p1 mbarrier.init.shared::cta.b64 [bar], 1;
    fence.mbarrier_init.release.cluster;
    bar.sync 0;
    setp.lt.u32 %p2, %r0, 32;
    @!%p2 bra ISSUED;
    elect.sync %r10|%p3, 0xffffffff;
    @!%p3 bra ISSUED;
    mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [bar], 4096;
    shl.b32 %r2, %r1, 4;
    mov.u32 %r3, 0;
    mov.u32 %r4, 64;
    cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [smem], [%rd3, {%r3, %r2}], [bar];
    cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [smem+2048], [%rd3, {%r4, %r2}], [bar];
ISSUED:
    mov.u32 %r11, 0;
WAIT:
    mbarrier.try_wait.parity.shared::cta.b64 %p4, [bar], %r11;
    @!%p4 bra WAIT;
    mov.u32 %r12, %r0;
CHUNK:
    // chunk k: box c = k / 128, row r = k / 8 mod 16, 16-byte chunk j = k mod 8,
    // stored at chunk j ^ (r mod 8) of the row.
    shr.u32 %r13, %r12, 7;
    shr.u32 %r14, %r12, 3;
    and.b32 %r14, %r14, 15;
    and.b32 %r15, %r12, 7;
    and.b32 %r16, %r14, 7;
    xor.b32 %r17, %r15, %r16;
    shl.b32 %r18, %r13, 11;
    shl.b32 %r19, %r14, 7;
    shl.b32 %r20, %r17, 4;
    add.u32 %r21, %r18, %r19;
    add.u32 %r21, %r21, %r20;
    mov.u32 %r22, smem;
    add.u32 %r21, %r21, %r22;
    ld.shared.v4.u32 {%r23, %r24, %r25, %r26}, [%r21];
    shl.b32 %r27, %r1, 4;
    add.u32 %r27, %r27, %r14;
    cvt.u64.u32 %rd5, %r27;
    setp.ge.u64 %p5, %rd5, %rd2;
    @%p5 bra SKIP;
    // out + (row * 128 + 64 c + 8 j) * 2
    shl.b32 %r28, %r27, 7;
    shl.b32 %r29, %r13, 6;
    shl.b32 %r30, %r15, 3;
    add.u32 %r28, %r28, %r29;
    add.u32 %r28, %r28, %r30;
    mul.wide.u32 %rd6, %r28, 2;
    add.u64 %rd7, %rd1, %rd6;
    st.global.v4.u32 [%rd7], {%r23, %r24, %r25, %r26};
SKIP:
    add.u32 %r12, %r12, 128;
    setp.lt.u32 %p6, %r12, 256;
    @%p6 bra CHUNK;
DONE:
    ret;
}
"#;

/// `jagged_softmax` over `[T, 128]` bf16: a graph with the values as an input
/// and a `[T, 128]` bf16 output (the kernel copies rather than normalizes).
fn graph() -> Graph {
    ops::jagged_softmax(&JaggedSpec {
        dtype: DType::BF16,
        offsets: DType::I32,
        inner: vec![COLS],
    })
    .expect("graph")
}

/// The copy kernel with its tensor map over input `values`.
fn copy_kernel(values: usize) -> CompiledKernel {
    CompiledKernel {
        ptx: PTX.to_string(),
        arch: Arch::Sm90a,
        launches: vec![Launch {
            entry: "tmap_copy".to_string(),
            block: 128,
            dynamic_shared_bytes: 0,
            grid: GridRule {
                items: SizeExpr::TotalRows,
                items_per_block: u64::from(BOX_ROWS),
                max_blocks: 65535,
            },
            params: vec![
                ParamBinding::TensorMap(TensorMapBinding {
                    input: values,
                    dtype: DType::BF16,
                    dims: vec![SizeExpr::Const(COLS as u64), SizeExpr::TotalRows],
                    box_dim: vec![64, BOX_ROWS],
                    swizzle: Swizzle::B128,
                }),
                ParamBinding::Output(0),
                ParamBinding::Size(SizeExpr::TotalRows),
            ],
        }],
        scratch: Vec::new(),
        outputs: vec![OutputBuffer {
            elem: DType::BF16,
            elems: SizeExpr::TotalRows * SizeExpr::Const(COLS as u64),
            used_rows_from: None,
        }],
    }
}

/// The position of input `name` in `graph`'s input order.
fn input_index(graph: &Graph, name: &str) -> usize {
    graph
        .inputs()
        .position(|(_, n, _)| n == name)
        .expect("input")
}

#[test]
fn the_launcher_encodes_a_tensor_map_over_an_input() {
    // 37 rows: the last block's box runs 11 rows past T.
    copies_through_a_tensor_map(&[5, 0, 20, 12]);
}

#[test]
fn no_rows_encode_a_map_of_one_row() {
    copies_through_a_tensor_map(&[0, 0]);
}

/// Runs the copy kernel on sequences of `lengths`; its output must be the values.
fn copies_through_a_tensor_map(lengths: &[usize]) {
    let graph = graph();
    let kernel = copy_kernel(input_index(&graph, "values"));
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    // Exact in bf16: small integers and halves.
    let values: Vec<f64> = (0..total * COLS)
        .map(|i| ((i * 37) % 251) as f64 * 0.5 - 60.0)
        .collect();
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    let offsets_t = DenseTensor::from_f64(DType::I32, vec![lengths.len() + 1], &offsets).unwrap();
    let values_t = DenseTensor::from_f64(DType::BF16, vec![total, COLS], &values).unwrap();
    let offsets_d = rt.upload_tensor(&offsets_t).expect("upload");
    let values_d = rt.upload_tensor(&values_t).expect("upload");
    let out = rt
        .run_compiled(
            &graph,
            &kernel,
            &[("offsets", &offsets_d), ("values", &values_d)],
            &[("max_len", AttrValue::Index(32))],
        )
        .expect("run");
    let got = rt.download_tensor(&out["values"]).expect("download");
    assert_eq!(got.shape(), &[total, COLS]);
    assert_eq!(got.to_f64(), values);
}

/// A launch target on device addresses that keeps the default
/// `tensor_map` (which refuses), as a target that cannot encode maps does.
struct NoMaps<'a> {
    rt: &'a mut Runtime,
}

impl LaunchTarget for NoMaps<'_> {
    type Buffer = DeviceBuffer;

    fn alloc(
        &mut self,
        dtype: DType,
        elems: usize,
        _role: BufferRole,
    ) -> Result<DeviceBuffer, GraphRunError> {
        Ok(self.rt.alloc(dtype, elems)?)
    }

    fn arg(&self, buffer: &DeviceBuffer) -> KernelArg {
        buffer.arg()
    }

    fn launch(
        &mut self,
        entry: &str,
        _dims: &LaunchDims,
        _args: &[KernelArg],
    ) -> Result<(), GraphRunError> {
        panic!("{entry} launched without its tensor map")
    }

    fn read_index(
        &mut self,
        name: &str,
        _buffer: &DeviceBuffer,
        _dtype: DType,
        _elems: usize,
        _index: usize,
    ) -> Result<i64, GraphRunError> {
        panic!("{name} read")
    }
}

#[test]
fn a_target_without_tensor_maps_refuses_a_binding() {
    let graph = graph();
    let kernel = copy_kernel(input_index(&graph, "values"));
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    let sizes = RunSizes {
        batch: 1,
        total_rows: 16,
        max_len: 16,
    };
    let inputs = [KernelArg::U64(0x1000), KernelArg::U64(0x2000)];
    let err = launch_plan(
        &graph,
        &kernel,
        &sizes,
        &BTreeMap::new(),
        &inputs,
        &mut NoMaps { rt: &mut rt },
    )
    .unwrap_err();
    assert!(
        matches!(&err, GraphRunError::Unsupported(m) if m.contains("tensor-map")),
        "{err}"
    );
}

/// A launch target like the Python CUDA path: inputs are device addresses
/// the runtime does not own, maps over them are encoded on the host by
/// [`Runtime::tensor_map_at`]; the launches are recorded.
struct Addresses<'a> {
    rt: &'a mut Runtime,
    launched: Vec<Vec<KernelArg>>,
}

impl LaunchTarget for Addresses<'_> {
    type Buffer = DeviceBuffer;

    fn alloc(
        &mut self,
        dtype: DType,
        elems: usize,
        _role: BufferRole,
    ) -> Result<DeviceBuffer, GraphRunError> {
        Ok(self.rt.alloc(dtype, elems)?)
    }

    fn arg(&self, buffer: &DeviceBuffer) -> KernelArg {
        buffer.arg()
    }

    fn launch(
        &mut self,
        _entry: &str,
        _dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), GraphRunError> {
        self.launched.push(args.to_vec());
        Ok(())
    }

    fn read_index(
        &mut self,
        name: &str,
        _buffer: &DeviceBuffer,
        _dtype: DType,
        _elems: usize,
        _index: usize,
    ) -> Result<i64, GraphRunError> {
        panic!("{name} read")
    }

    fn tensor_map(&mut self, input: KernelArg, map: &TiledMap) -> Result<KernelArg, GraphRunError> {
        let KernelArg::U64(address) = input else {
            panic!("a map over {input:?}")
        };
        Ok(self.rt.tensor_map_at(address, map)?)
    }
}

#[test]
fn an_external_target_encodes_maps_over_device_addresses() {
    let graph = graph();
    let values = input_index(&graph, "values");
    let kernel = copy_kernel(values);
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    let sizes = RunSizes {
        batch: 1,
        total_rows: 40,
        max_len: 40,
    };
    let mut inputs = [KernelArg::U64(0x1000), KernelArg::U64(0x1000)];
    inputs[values] = KernelArg::U64(0x2000);
    let mut target = Addresses {
        rt: &mut rt,
        launched: Vec::new(),
    };
    launch_plan(
        &graph,
        &kernel,
        &sizes,
        &BTreeMap::new(),
        &inputs,
        &mut target,
    )
    .expect("planned");
    // The values `{128, T}` bf16 at 0x2000, rows of 256 bytes, boxes {64, 16}.
    let want = TensorMap::encode_tiled(
        TensorMapDataType::Bfloat16,
        2,
        0x2000,
        &[COLS as u64, 40],
        &[2 * COLS as u64],
        &[64, BOX_ROWS],
        &[1, 1],
        TensorMapInterleave::None,
        TensorMapSwizzle::B128,
        TensorMapL2Promotion::None,
        TensorMapFloatOobFill::None,
    )
    .expect("map");
    assert_eq!(target.launched.len(), 1);
    assert_eq!(
        target.launched[0][0],
        KernelArg::TensorMap(TensorMapBytes(want.0))
    );
}

#[test]
fn a_tensor_map_over_a_missing_input_is_bad_metadata() {
    let graph = graph();
    let kernel = copy_kernel(7);
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    let sizes = RunSizes {
        batch: 1,
        total_rows: 16,
        max_len: 16,
    };
    let err = launch_plan(
        &graph,
        &kernel,
        &sizes,
        &BTreeMap::new(),
        &[KernelArg::U64(0x1000)],
        &mut NoMaps { rt: &mut rt },
    )
    .unwrap_err();
    assert!(
        matches!(&err, GraphRunError::BadMetadata { reason, .. } if reason.contains("input 7")),
        "{err}"
    );
}

//! Hopper's asynchronous copies: mbarriers, `cp.async.bulk`, `cp.async.bulk.tensor` tile
//! loads and stores through tensor maps, `tensormap.replace`, `elect.sync`, and the
//! checker's findings about them.
//!
//! Every kernel comes from one generator ([`Kernel::ptx`]) with its variations (rank,
//! swizzle, where the tensor map lives, how threads wait, planted bugs). Expected values
//! are computed on the host from the PTX ISA / CUDA driver definitions: the box's element
//! at box index `k` is the tensor's element at `coords + k * elementStrides`, or the fill
//! value outside the tensor; boxes are dense in shared memory, dimension 0 fastest; a
//! swizzled box has the 16-byte chunk `j` of each 128-byte segment `s` (of the shared
//! address) stored at chunk `j ^ (s mod span/16)` (the PTX ISA's swizzle figures).

mod triton_support;

use jagged_emu::tensormap::{
    TensorMapDataType, TensorMapFloatOobFill, TensorMapInterleave, TensorMapL2Promotion,
    TensorMapSwizzle,
};
use jagged_emu::{
    CheckKind, Device, DevicePtr, EmuError, KernelArg, LaunchConfig, LaunchStats, Module,
    TensorMap, TensorMapError,
};
use triton_support::Rng;

/// Threads per CTA of every kernel.
const THREADS: u32 = 128;
/// Shared bytes for boxes (each stage of the pipeline kernel too).
const STAGE_BYTES: usize = 16384;

/// Where the kernel finds its tensor map.
#[derive(Clone, Copy, Debug, PartialEq)]
enum MapAt {
    /// A by-value `.param .align 64 .b8 [128]`, addressed through `cvta.param` of its name.
    Param,
    /// Global memory (a pointer parameter).
    Global,
    /// Built in shared memory with `tensormap.replace` from the fields of a host-built
    /// map in global memory (the mode codes as immediates), then copied to a global workspace with
    /// `tensormap.cp_fenceproxy` (Triton's device-side descriptors).
    Replaced,
}

/// How the threads wait for the load's mbarrier phase.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wait {
    /// Triton's loop: a block-scoped predicate, `@!complete bra.uni waitLoop`.
    TryParity,
    /// CUTLASS's loop: a suspend-time hint, `@P1 bra DONE; bra LAB_WAIT`.
    TryParityHint,
    /// A `test_wait` spin.
    TestParity,
    /// `try_wait` on the state returned by an `arrive` of each thread's own (the
    /// mbarrier expects every thread).
    TryState,
}

/// A bug planted in an otherwise correct kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Plant {
    None,
    /// No `mbarrier.init`.
    NoInit,
    /// Two threads arrive on a phase that expects one.
    ExtraArrival,
    /// `expect_tx` of 16 bytes fewer than the box delivers.
    ShortExpectTx,
    /// The mbarrier expects two arrivals but gets one: the wait never completes.
    MissingArrival,
    /// The box lands `offset` bytes past a 1024-byte aligned shared address.
    DstOffset(u32),
    /// The box lands in the last bytes of shared memory, running past its end.
    DstPastEnd,
    /// A `bar.sync` instead of the mbarrier wait: the box is read before its phase is seen.
    NoWait,
}

/// One generated kernel: a TMA load of a box (or a bulk copy when `rank` is 0), waited
/// for on an mbarrier, and the shared bytes copied to `out`; with `store`, the box is
/// then written back through a tensor store at `store_coords` of a second tensor.
#[derive(Clone, Copy, Debug)]
struct Kernel {
    rank: usize,
    box_bytes: usize,
    /// Shared bytes copied out: the box's bytes, or (zero-filled first) whole 128-byte
    /// segments for a swizzled box that ends inside one.
    extent: usize,
    /// The immediate codes `tensormap.replace` writes for the element type, interleave,
    /// swizzle and fill of a [`MapAt::Replaced`] map.
    modes: [u8; 4],
    map: MapAt,
    wait: Wait,
    plant: Plant,
    store: bool,
}

impl Kernel {
    fn load(rank: usize, box_bytes: usize) -> Kernel {
        Kernel {
            rank,
            box_bytes,
            extent: box_bytes,
            modes: [0; 4],
            map: MapAt::Param,
            wait: Wait::TryParity,
            plant: Plant::None,
            store: false,
        }
    }

    /// Shared offset of the box.
    fn dst_offset(&self) -> usize {
        match self.plant {
            Plant::DstOffset(o) => 1024 + o as usize,
            Plant::DstPastEnd => STAGE_BYTES + 2048 - 128,
            _ => 1024,
        }
    }

    /// PTX of kernel `k(map or map pointer, out, coords, scratch, store map, store coords)`.
    fn ptx(&self) -> String {
        let rank = self.rank;
        let bytes = self.box_bytes;
        let dst = self.dst_offset();
        let count = match (self.plant, self.wait) {
            (_, Wait::TryState) => THREADS,
            (Plant::MissingArrival, _) => 2,
            _ => 1,
        };
        let map_param = match self.map {
            MapAt::Param => ".param .align 64 .b8 k_map[128]",
            MapAt::Global | MapAt::Replaced => ".param .u64 k_map",
        };
        let mut s = String::new();
        let mut line = |l: &str| {
            s.push_str(l);
            s.push('\n');
        };
        line(".version 8.3\n.target sm_90a\n.address_size 64\n");
        line(&format!(
            ".visible .entry k(\n    {map_param},\n    .param .u64 k_out,\n    .param .u64 k_coords,\n    .param .u64 k_scratch,\n    .param .align 64 .b8 k_smap[128],\n    .param .u64 k_scoords\n)\n{{"
        ));
        line("    .reg .pred %p<16>;\n    .reg .b32 %r<48>;\n    .reg .b64 %rd<32>;");
        line(&format!(
            "    .shared .align 1024 .b8 smem[{}];",
            STAGE_BYTES + 2048
        ));
        line("    .shared .align 8 .b64 bar;");
        line("    mov.u32 %r0, %tid.x;");
        line("    ld.param.u64 %rd1, [k_out];");
        line("    ld.param.u64 %rd2, [k_coords];");
        line("    ld.param.u64 %rd20, [k_scratch];");
        for d in 0..5 {
            line(&format!("    ld.global.s32 %r{}, [%rd2+{}];", 1 + d, 4 * d));
        }
        let tmap = match self.map {
            MapAt::Param => {
                // Triton's and CUTLASS's form: the parameter's generic address.
                line("    mov.b64 %rd4, k_map;");
                line("    cvta.param.u64 %rd3, %rd4;");
                "%rd3"
            }
            MapAt::Global => {
                line("    ld.param.u64 %rd3, [k_map];");
                "%rd3"
            }
            MapAt::Replaced => {
                self.replace_into_scratch(&mut line);
                "%rd20"
            }
        };
        if self.extent > bytes {
            line("    shl.b32 %r40, %r0, 2;");
            line("    mov.u32 %r41, smem;");
            line("    mov.u32 %r43, 0;");
            line("ZERO:");
            line(&format!("    setp.ge.u32 %p9, %r40, {};", self.extent));
            line("    @%p9 bra ZEROED;");
            line("    add.u32 %r42, %r41, %r40;");
            line(&format!("    st.shared.u32 [%r42+{dst}], %r43;"));
            line(&format!("    add.u32 %r40, %r40, {};", 4 * THREADS));
            line("    bra ZERO;");
            line("ZEROED:");
        }
        if self.plant != Plant::NoInit {
            line("    setp.ne.u32 %p1, %r0, 0;");
            line(&format!(
                "    @!%p1 mbarrier.init.shared::cta.b64 [bar], {count};"
            ));
        }
        line("    fence.mbarrier_init.release.cluster;");
        line("    bar.sync 0;");
        // One elected lane of warp 0 issues the copy.
        line("    setp.lt.u32 %p2, %r0, 32;");
        line("    @!%p2 bra ISSUED;");
        line("    elect.sync %r10|%p3, 0xffffffff;");
        line("    @!%p3 bra ISSUED;");
        let tx = if self.plant == Plant::ShortExpectTx {
            bytes - 16
        } else {
            bytes
        };
        if self.wait == Wait::TryState {
            line(&format!(
                "    mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [bar], {tx};"
            ));
        } else {
            line(&format!(
                "    mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [bar], {tx};"
            ));
        }
        if self.plant == Plant::ExtraArrival {
            line("    mbarrier.arrive.shared::cta.b64 %rd5, [bar];");
        }
        if rank == 0 {
            line("    ld.param.u64 %rd6, [k_map];");
            line(&format!(
                "    cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [smem+{dst}], [%rd6], {bytes}, [bar];"
            ));
        } else {
            let coords: Vec<String> = (0..rank).map(|d| format!("%r{}", 1 + d)).collect();
            line(&format!(
                "    cp.async.bulk.tensor.{rank}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [smem+{dst}], [{tmap}, {{{}}}], [bar];",
                coords.join(", ")
            ));
        }
        line("ISSUED:");
        match (self.plant, self.wait) {
            (Plant::NoWait, _) => line("    bar.sync 0;"),
            (_, Wait::TryState) => {
                line("    mbarrier.arrive.shared::cta.b64 %rd7, [bar];");
                line("WAIT:");
                line("    mbarrier.try_wait.shared::cta.b64 %p4, [bar], %rd7;");
                line("    @!%p4 bra WAIT;");
            }
            (_, Wait::TryParity) => {
                line("    mov.u32 %r11, 0;");
                line("    {\n    .reg .pred complete;\n    waitLoop:");
                line("    mbarrier.try_wait.parity.shared::cta.b64 complete, [bar], %r11;");
                line("    @!complete bra.uni waitLoop;\n    }");
            }
            (_, Wait::TryParityHint) => {
                line("    mov.u32 %r11, 0;");
                line("    mov.u32 %r16, 0x989680;");
                line("    {\n    .reg .pred P1;\n    LAB_WAIT:");
                line("    mbarrier.try_wait.parity.shared::cta.b64 P1, [bar], %r11, %r16;");
                line("    @P1 bra DONE;\n    bra LAB_WAIT;\n    DONE:\n    }");
            }
            (_, Wait::TestParity) => {
                line("    mov.u32 %r11, 0;");
                line("WAIT:");
                line("    mbarrier.test_wait.parity.shared::cta.b64 %p4, [bar], %r11;");
                line("    @!%p4 bra WAIT;");
            }
        }
        // Copy the shared bytes out, 4 per thread per step.
        line("    shl.b32 %r12, %r0, 2;");
        line("    mov.u32 %r13, smem;");
        line("DUMP:");
        line(&format!("    setp.ge.u32 %p5, %r12, {};", self.extent));
        line("    @%p5 bra DUMPED;");
        line("    add.u32 %r14, %r13, %r12;");
        line(&format!("    ld.shared.u32 %r15, [%r14+{dst}];"));
        line("    cvt.u64.u32 %rd8, %r12;");
        line("    add.s64 %rd9, %rd1, %rd8;");
        line("    st.global.u32 [%rd9], %r15;");
        line(&format!("    add.u32 %r12, %r12, {};", 4 * THREADS));
        line("    bra DUMP;");
        line("DUMPED:");
        if self.store {
            line("    ld.param.u64 %rd10, [k_scoords];");
            for d in 0..rank {
                line(&format!(
                    "    ld.global.s32 %r{}, [%rd10+{}];",
                    20 + d,
                    4 * d
                ));
            }
            line("    fence.proxy.async.shared::cta;");
            line("    bar.sync 0;");
            line("    @%p2 bra STORED;");
            line("    setp.ne.u32 %p6, %r0, 32;");
            line("    @%p6 bra STORED;");
            if rank == 0 {
                line("    ld.param.u64 %rd11, [k_scoords];");
                line(&format!(
                    "    cp.async.bulk.global.shared::cta.bulk_group [%rd11], [smem+{dst}], {bytes};"
                ));
            } else {
                let coords: Vec<String> = (0..rank).map(|d| format!("%r{}", 20 + d)).collect();
                line("    mov.u64 %rd12, k_smap;");
                line(&format!(
                    "    cp.async.bulk.tensor.{rank}d.global.shared::cta.tile.bulk_group [%rd12, {{{}}}], [smem+{dst}];",
                    coords.join(", ")
                ));
            }
            line("    cp.async.bulk.commit_group;");
            line("    cp.async.bulk.wait_group.read 0;");
            line("STORED:");
        }
        line("    ret;\n}");
        s
    }

    /// Warp 0 zero-fills a map in shared memory, one lane writes every field of the
    /// host-built map at `[k_map]` with `tensormap.replace`, and the warp copies it to the
    /// global scratch at `%rd20`.
    fn replace_into_scratch(&self, line: &mut impl FnMut(&str)) {
        line("    ld.param.u64 %rd3, [k_map];");
        line("    setp.lt.u32 %p7, %r0, 32;");
        line("    @!%p7 bra REPLACED;");
        line("    shl.b32 %r30, %r0, 2;");
        line("    mov.u32 %r31, smem;");
        line("    add.u32 %r31, %r31, %r30;");
        line("    mov.u32 %r32, 0;");
        line("    st.shared.b32 [%r31], %r32;");
        line("    bar.warp.sync -1;");
        line("    mov.u64 %rd21, smem;");
        line("    setp.eq.u32 %p8, %r0, 0;");
        // The fields, read back from the host-built map (the test's own layout of them).
        let mut field = |name: &str, ord: Option<usize>, at: usize, width: usize| {
            let (ld, reg, ty) = match width {
                8 => ("ld.global.u64", "%rd22", "b64"),
                4 => ("ld.global.u32", "%r33", "b32"),
                _ => ("ld.global.u8", "%r33", "b32"),
            };
            line(&format!("    {ld} {reg}, [%rd3+{at}];"));
            let ord = ord.map(|o| format!(" {o},")).unwrap_or_default();
            line(&format!(
                "    @%p8 tensormap.replace.tile.{name}.shared::cta.b1024.{ty} [%rd21],{ord} {reg};"
            ));
        };
        field("global_address", None, 0, 8);
        field("rank", None, 8, 1);
        for d in 0..self.rank {
            field("global_dim", Some(d), 16 + 8 * d, 4);
            field("box_dim", Some(d), 88 + 4 * d, 4);
            field("element_stride", Some(d), 108 + 4 * d, 4);
            if d + 1 < self.rank {
                field("global_stride", Some(d), 56 + 8 * d, 8);
            }
        }
        let modes = ["elemtype", "interleave_layout", "swizzle_mode", "fill_mode"];
        for (name, code) in modes.iter().zip(self.modes) {
            // ptxas takes these codes as immediates only.
            line(&format!(
                "    @%p8 tensormap.replace.tile.{name}.shared::cta.b1024.b32 [%rd21], {code};"
            ));
        }
        line("    bar.warp.sync -1;");
        line(
            "    tensormap.cp_fenceproxy.global.shared::cta.tensormap::generic.release.gpu.sync.aligned [%rd20], [%rd21], 128;",
        );
        line("    fence.proxy.tensormap::generic.acquire.gpu [%rd20], 128;");
        line("REPLACED:");
        line("    bar.sync 0;");
    }
}

/// A tiled tensor in host memory and its map's parameters.
#[derive(Clone, Debug)]
struct Tensor {
    ty: TensorMapDataType,
    dims: Vec<u64>,
    /// Byte strides of dimensions 1.. (as `cuTensorMapEncodeTiled` takes them).
    strides: Vec<u64>,
    boxes: Vec<u32>,
    estrides: Vec<u32>,
    swizzle: TensorMapSwizzle,
    nan_fill: bool,
    bytes: Vec<u8>,
}

impl Tensor {
    fn esize(&self) -> usize {
        self.ty.size() as usize
    }

    /// Elements of the box along `d`.
    fn box_len(&self, d: usize) -> usize {
        (self.boxes[d] as usize).div_ceil(self.estrides[d] as usize)
    }

    fn box_bytes(&self) -> usize {
        (0..self.dims.len())
            .map(|d| self.box_len(d))
            .product::<usize>()
            * self.esize()
    }

    /// Shared bytes the box may touch: whole 128-byte segments when swizzled.
    fn extent(&self) -> usize {
        match self.swizzle {
            TensorMapSwizzle::None => self.box_bytes(),
            _ => self.box_bytes().next_multiple_of(128),
        }
    }

    /// The generated kernel that loads this tensor's boxes.
    fn kernel(&self) -> Kernel {
        Kernel {
            extent: self.extent(),
            modes: [
                self.ty.ptx_code(),
                TensorMapInterleave::None as u8,
                self.swizzle as u8,
                u8::from(self.nan_fill),
            ],
            ..Kernel::load(self.dims.len(), self.box_bytes())
        }
    }

    /// Byte offset of the element at `c`, or `None` outside the tensor.
    fn offset(&self, c: &[i64]) -> Option<usize> {
        let mut off = 0usize;
        for (d, &x) in c.iter().enumerate() {
            if x < 0 || x as u64 >= self.dims[d] {
                return None;
            }
            let stride = if d == 0 {
                self.esize() as u64
            } else {
                self.strides[d - 1]
            };
            off += x as usize * stride as usize;
        }
        Some(off)
    }

    /// The global coordinates of every box element at `coords`, in dense box order.
    fn box_coords(&self, coords: &[i64]) -> Vec<Vec<i64>> {
        let rank = self.dims.len();
        let n: usize = (0..rank).map(|d| self.box_len(d)).product();
        (0..n)
            .map(|mut i| {
                (0..rank)
                    .map(|d| {
                        let k = (i % self.box_len(d)) as i64;
                        i /= self.box_len(d);
                        coords[d] + k * self.estrides[d] as i64
                    })
                    .collect()
            })
            .collect()
    }

    fn map(&self, at: DevicePtr) -> Result<TensorMap, TensorMapError> {
        TensorMap::encode_tiled(
            self.ty,
            self.dims.len() as u32,
            at.0,
            &self.dims,
            &self.strides,
            &self.boxes,
            &self.estrides,
            TensorMapInterleave::None,
            self.swizzle,
            TensorMapL2Promotion::L2_128B,
            if self.nan_fill {
                TensorMapFloatOobFill::NanRequestZeroFma
            } else {
                TensorMapFloatOobFill::None
            },
        )
    }
}

/// The shared-memory position of the byte at box offset `o` (the box 1024-byte aligned).
fn swizzled(o: usize, swizzle: TensorMapSwizzle) -> usize {
    let span = match swizzle {
        TensorMapSwizzle::None => return o,
        TensorMapSwizzle::B32 => 32,
        TensorMapSwizzle::B64 => 64,
        TensorMapSwizzle::B128 => 128,
    };
    let chunks = span / 16;
    let segment = (o / 128) % chunks;
    let chunk = (o / 16) % chunks;
    o - 16 * chunk + 16 * (chunk ^ segment)
}

fn is_nan(bytes: &[u8]) -> bool {
    match bytes.len() {
        2 => {
            let v = u16::from_le_bytes([bytes[0], bytes[1]]);
            // f16 and bf16 alike: all-ones exponent, nonzero mantissa in the low bits.
            (v & 0x7c00 == 0x7c00 && v & 0x03ff != 0) || (v & 0x7f80 == 0x7f80 && v & 0x7f != 0)
        }
        4 => f32::from_le_bytes(bytes.try_into().unwrap()).is_nan(),
        _ => f64::from_le_bytes(bytes.try_into().unwrap()).is_nan(),
    }
}

/// A random tensor of rank `rank` with elements of `ty`, a box that is 16-byte granular
/// (exactly the swizzle span when swizzled), padded row strides and coordinates
/// that often cross the tensor's ends.
fn random_tensor(
    rng: &mut Rng,
    rank: usize,
    ty: TensorMapDataType,
    swizzle: TensorMapSwizzle,
) -> (Tensor, Vec<i64>) {
    let mut pick = |n: u64| rng.next_u64() % n;
    let esize = ty.size() as u64;
    let inner = match swizzle {
        TensorMapSwizzle::None => (16 / esize.min(16)) * (1 + pick(4)),
        TensorMapSwizzle::B32 => 32 / esize,
        TensorMapSwizzle::B64 => 64 / esize,
        TensorMapSwizzle::B128 => 128 / esize,
    };
    let mut boxes = vec![inner as u32];
    let mut estrides = vec![1u32];
    for d in 1..rank {
        // Eight 128-byte segments in all keep every swizzle pattern's full period; outer
        // dimensions take every other element in a third of the cases (2 of a box of 3 or 4).
        let (b, es) = match d {
            1 => (8, 1),
            _ if pick(3) == 0 => (3 + pick(2) as u32, 2),
            _ => (1 + pick(2) as u32, 1),
        };
        boxes.push(b);
        estrides.push(es);
    }
    let dims: Vec<u64> = boxes
        .iter()
        .map(|&b| b as u64 + pick(b as u64 + 3))
        .collect();
    let mut strides = Vec::new();
    let mut stride = (dims[0] * esize).next_multiple_of(16) + 16 * pick(2);
    for &dim in &dims[1..] {
        strides.push(stride);
        stride = stride * dim + 16 * pick(2);
    }
    let total = (stride as usize).max(16);
    let bytes: Vec<u8> = (0..total).map(|_| pick(256) as u8).collect();
    let coords: Vec<i64> = (0..rank)
        .map(|d| pick(dims[d] + boxes[d] as u64) as i64 - boxes[d] as i64 / 2)
        .collect();
    let t = Tensor {
        ty,
        dims,
        strides,
        boxes,
        estrides,
        swizzle,
        nan_fill: ty.is_float() && pick(2) == 0,
        bytes,
    };
    (t, coords)
}

/// The shared-memory image of the box at `coords`: expected bytes, and per byte whether
/// it must be a NaN fill (checked per element).
fn expected_box(t: &Tensor, coords: &[i64]) -> (Vec<u8>, Vec<bool>) {
    let es = t.esize();
    // A swizzled box ending inside a 128-byte segment leaves zeros (what the kernel wrote
    // before) in the segment's other chunks.
    let mut image = vec![0u8; t.extent()];
    let mut nan = vec![false; t.extent()];
    for (i, c) in t.box_coords(coords).iter().enumerate() {
        for b in 0..es {
            let at = swizzled(i * es + b, t.swizzle);
            match t.offset(c) {
                Some(o) => image[at] = t.bytes[o + b],
                None => nan[at] = t.nan_fill,
            }
        }
    }
    (image, nan)
}

fn coords_bytes(c: &[i64]) -> Vec<u8> {
    let mut v: Vec<u8> = c.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect();
    v.resize(20, 0);
    v
}

fn config() -> LaunchConfig {
    LaunchConfig {
        grid: [1, 1, 1],
        block: [THREADS, 1, 1],
        dynamic_shared_bytes: 0,
    }
}

/// The result of one launch of a generated kernel.
struct Run {
    result: Result<LaunchStats, EmuError>,
    /// The shared bytes the kernel copied out.
    out: Vec<u8>,
    /// The store's destination tensor after the launch.
    stored: Vec<u8>,
    /// The tensor map the kernel built in its global scratch.
    scratch: Vec<u8>,
    /// The host-built map of the loaded tensor.
    map: TensorMap,
}

/// Runs `k` on tensor `t` with the box at `coords`; with `k.store`, the box is stored to
/// a copy of `dst` (same shape as `t`) at `store_coords`.
fn run(k: &Kernel, t: &Tensor, coords: &[i64], dst: Option<(&Tensor, &[i64])>) -> Run {
    let mut dev = Device::new();
    let module = Module::parse(&k.ptx()).unwrap_or_else(|e| panic!("{e}\n{}", k.ptx()));
    let src = dev.upload(&t.bytes);
    let map = t.map(src).expect("valid tensor map");
    let out = dev.alloc(k.extent);
    let c = dev.upload(&coords_bytes(coords));
    let scratch = dev.alloc(128);
    let map_arg = match k.map {
        MapAt::Param => KernelArg::TensorMap(map),
        MapAt::Global | MapAt::Replaced => KernelArg::Ptr(dev.upload(map.bytes())),
    };
    let (smap, scoords, target) = match dst {
        Some((d, sc)) => {
            let target = dev.upload(&d.bytes);
            (
                d.map(target).expect("valid store map"),
                dev.upload(&coords_bytes(sc)),
                Some((target, d.bytes.len())),
            )
        }
        None => (map, c, None),
    };
    let args = [
        map_arg,
        KernelArg::Ptr(out),
        KernelArg::Ptr(c),
        KernelArg::Ptr(scratch),
        KernelArg::TensorMap(smap),
        KernelArg::Ptr(scoords),
    ];
    let result = dev.launch(&module, "k", &config(), &args);
    Run {
        result,
        out: dev.read(out, k.extent).unwrap(),
        stored: target
            .map(|(p, n)| dev.read(p, n).unwrap())
            .unwrap_or_default(),
        scratch: dev.read(scratch, 128).unwrap(),
        map,
    }
}

/// Checks a loaded box against the host reference.
fn check_box(t: &Tensor, coords: &[i64], out: &[u8], what: &str) {
    let (image, nan) = expected_box(t, coords);
    let es = t.esize();
    for e in 0..image.len() / es {
        let r = e * es..(e + 1) * es;
        if nan[e * es] {
            assert!(is_nan(&out[r]), "{what}: element at {e} should be NaN fill");
        } else {
            assert_eq!(
                out[r.clone()],
                image[r],
                "{what}: bytes of element at shared offset {}",
                e * es
            );
        }
    }
}

const TYPES: [TensorMapDataType; 6] = [
    TensorMapDataType::Uint8,
    TensorMapDataType::Float16,
    TensorMapDataType::Bfloat16,
    TensorMapDataType::Float32,
    TensorMapDataType::Int32,
    TensorMapDataType::Float64,
];

const SWIZZLES: [TensorMapSwizzle; 4] = [
    TensorMapSwizzle::None,
    TensorMapSwizzle::B32,
    TensorMapSwizzle::B64,
    TensorMapSwizzle::B128,
];

/// Loads random boxes of every rank, swizzle and element size (many crossing the tensor's
/// ends) and compares the shared-memory bytes with the reference image.
#[test]
fn tensor_loads_match_the_reference() {
    let mut rng = Rng::new(0x7a11_0ad5);
    let mut crossing = 0;
    for rank in 1..=5 {
        for (i, &swizzle) in SWIZZLES.iter().enumerate() {
            for j in 0..3 {
                let ty = TYPES[(rank + i + j) % TYPES.len()];
                let (t, coords) = random_tensor(&mut rng, rank, ty, swizzle);
                crossing += t.box_coords(&coords).iter().any(|c| t.offset(c).is_none()) as u32;
                let mut k = t.kernel();
                k.map = [MapAt::Param, MapAt::Global, MapAt::Param][j];
                k.wait = [
                    Wait::TryParity,
                    Wait::TryParityHint,
                    Wait::TestParity,
                    Wait::TryState,
                ][(i + j + rank) % 4];
                let r = run(&k, &t, &coords, None);
                let what = format!(
                    "rank {rank} {ty:?} {swizzle:?} box {:?} at {coords:?} dims {:?} ({k:?})",
                    t.boxes, t.dims
                );
                r.result.unwrap_or_else(|e| panic!("{what}: {e}"));
                check_box(&t, &coords, &r.out, &what);
            }
        }
    }
    assert!(
        crossing >= 20,
        "only {crossing} boxes crossed the tensor's end"
    );
}

/// Loads a box and stores it with a tensor store at other coordinates of a second tensor:
/// in-bounds elements land there, out-of-bounds ones are not written.
#[test]
fn tensor_stores_write_the_box_inside_the_tensor() {
    let mut rng = Rng::new(0x0057_07e5);
    for rank in 1..=5 {
        for (i, &swizzle) in SWIZZLES.iter().enumerate() {
            let ty = TYPES[(rank + 2 * i) % TYPES.len()];
            let (mut t, coords) = random_tensor(&mut rng, rank, ty, swizzle);
            // The store's tensor: same shape and box, its own bytes and coordinates.
            t.nan_fill = false;
            // Stores take every element (element strides of 1), the box keeps its size.
            for d in 0..rank {
                t.boxes[d] = t.boxes[d].div_ceil(t.estrides[d]);
            }
            t.estrides.fill(1);
            let (mut d, _) = random_tensor(&mut rng, rank, ty, swizzle);
            let store_at: Vec<i64> = (0..rank)
                .map(|i| {
                    let b = t.boxes[i] as u64;
                    (rng.next_u64() % (t.dims[i] + b)) as i64 - b as i64 / 2
                })
                .collect();
            d.dims.clone_from(&t.dims);
            d.strides.clone_from(&t.strides);
            d.boxes.clone_from(&t.boxes);
            d.estrides.clone_from(&t.estrides);
            d.bytes.resize(t.bytes.len(), 0x5a);
            let mut k = t.kernel();
            k.store = true;
            let r = run(&k, &t, &coords, Some((&d, &store_at)));
            let what = format!(
                "rank {rank} {ty:?} {swizzle:?} box {:?} from {coords:?} to {store_at:?}",
                t.boxes
            );
            let stats = r.result.as_ref().unwrap_or_else(|e| panic!("{what}: {e}"));
            // Reference: the loaded image (zeros outside t) scattered to d's in-bounds elements.
            let (image, _) = expected_box(&t, &coords);
            let mut want = d.bytes.clone();
            let es = t.esize();
            let mut written = 0;
            for (e, c) in d.box_coords(&store_at).iter().enumerate() {
                if let Some(o) = d.offset(c) {
                    written += es;
                    for b in 0..es {
                        want[o + b] = image[swizzled(e * es + b, t.swizzle)];
                    }
                }
            }
            assert_eq!(r.stored, want, "{what}");
            // The cost model: the store's in-bounds bytes and the kernel's copy of the box's
            // shared bytes.
            assert_eq!(
                stats.profile.global_write_bytes,
                (written + t.extent()) as u64,
                "{what}"
            );
        }
    }
}

/// `cp.async.bulk` global -> shared (mbarrier completion) and shared -> global
/// (bulk group) move the bytes unchanged.
#[test]
fn bulk_copies_round_trip() {
    let mut rng = Rng::new(0xb01c);
    for n in [16usize, 48, 1024, 4096 + 16] {
        let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        let t = Tensor {
            ty: TensorMapDataType::Uint8,
            dims: vec![n as u64],
            strides: vec![],
            boxes: vec![16],
            estrides: vec![1],
            swizzle: TensorMapSwizzle::None,
            nan_fill: false,
            bytes: bytes.clone(),
        };
        let mut dev = Device::new();
        let mut k = Kernel::load(0, n);
        k.store = true;
        k.map = MapAt::Global;
        let module = Module::parse(&k.ptx()).unwrap();
        let src = dev.upload(&bytes);
        let out = dev.alloc(n);
        let back = dev.alloc(n);
        let unused = dev.alloc(128);
        let map = t.map(src).unwrap();
        let args = [
            KernelArg::Ptr(src),
            KernelArg::Ptr(out),
            KernelArg::Ptr(unused),
            KernelArg::Ptr(unused),
            KernelArg::TensorMap(map),
            KernelArg::Ptr(back),
        ];
        dev.launch(&module, "k", &config(), &args).unwrap();
        assert_eq!(dev.read(out, n).unwrap(), bytes, "{n} bytes to shared");
        assert_eq!(
            dev.read(back, n).unwrap(),
            bytes,
            "{n} bytes back to global"
        );
    }
}

/// Triton's device-side descriptors: a map rebuilt field by field with
/// `tensormap.replace` in shared memory and copied to global memory with
/// `tensormap.cp_fenceproxy` loads the same boxes as the host-built one.
#[test]
fn device_side_tensormap_replace() {
    let mut rng = Rng::new(0x7e9_1ace);
    for rank in 1..=5 {
        for &swizzle in &SWIZZLES[..] {
            let ty = TYPES[(rank * 3 + swizzle as usize) % TYPES.len()];
            let (t, coords) = random_tensor(&mut rng, rank, ty, swizzle);
            let mut k = t.kernel();
            k.map = MapAt::Replaced;
            let r = run(&k, &t, &coords, None);
            let what = format!("rank {rank} {ty:?} {swizzle:?}");
            r.result.unwrap_or_else(|e| panic!("{what}: {e}"));
            check_box(&t, &coords, &r.out, &what);
            // The rebuilt map is the host-built one but for the L2 promotion (byte 13),
            // which tensormap.replace cannot set.
            let mut host = *r.map.bytes();
            host[13] = 0;
            assert_eq!(r.scratch, host, "{what}: the map in global memory");
        }
    }
}

/// A two-stage producer/consumer loop: one elected thread loads tile `i` into stage
/// `i % 2` (full barrier of the stage), every thread waits on the phase parity
/// `(i / 2) % 2`, adds its column of the tile and arrives on the stage's empty barrier,
/// which the producer waits on before reusing the stage. Phases flip many times; three
/// CTAs run it at different tile offsets.
#[test]
fn two_stage_pipeline_flips_phases() {
    const TILES: usize = 9;
    // CTA k sums tiles k..k + TILES (the last k past the tensor's end).
    const CTAS: usize = 3;
    const ROWS: usize = 8;
    const COLS: usize = THREADS as usize;
    let mut rng = Rng::new(0x919e);
    let values: Vec<f32> = rng.vec(TILES * ROWS * COLS, -1.0, 1.0);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = Tensor {
        ty: TensorMapDataType::Float32,
        dims: vec![COLS as u64, (TILES * ROWS) as u64],
        strides: vec![COLS as u64 * 4],
        boxes: vec![32, ROWS as u32],
        estrides: vec![1, 1],
        swizzle: TensorMapSwizzle::B128,
        nan_fill: false,
        bytes,
    };
    let tile = ROWS * COLS * 4;
    let ptx = format!(
        r#"
.version 8.3
.target sm_90a
.address_size 64
.visible .entry pipe(.param .align 64 .b8 pipe_map[128], .param .u64 pipe_out)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<40>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<16>;
    .shared .align 1024 .b8 stages[{stages}];
    .shared .align 8 .b64 full[2];
    .shared .align 8 .b64 empty[2];
    mov.u32 %r0, %tid.x;
    setp.eq.u32 %p1, %r0, 0;
    @%p1 mbarrier.init.shared::cta.b64 [full], 1;
    @%p1 mbarrier.init.shared::cta.b64 [full+8], 1;
    @%p1 mbarrier.init.shared::cta.b64 [empty], {threads};
    @%p1 mbarrier.init.shared::cta.b64 [empty+8], {threads};
    bar.sync 0;
    mov.u64 %rd1, pipe_map;
    setp.lt.u32 %p2, %r0, 32;
    mov.u32 %r1, 0;
    @!%p2 bra ELECTED;
    elect.sync _|%p3, 0xffffffff;
ELECTED:
    and.pred %p4, %p2, %p3;
    // column = tid: part (tid / 32) of 4 boxes of 32 floats, at lane tid % 32
    mov.f32 %f1, 0f00000000;
LOOP:
    and.b32 %r2, %r1, 1;
    shr.u32 %r3, %r1, 1;
    and.b32 %r3, %r3, 1;
    shl.b32 %r4, %r2, 3;
    mov.u32 %r5, full;
    add.u32 %r5, %r5, %r4;
    mov.u32 %r6, empty;
    add.u32 %r6, %r6, %r4;
    mul.lo.u32 %r7, %r2, {tile};
    mov.u32 %r8, stages;
    add.u32 %r8, %r8, %r7;
    @!%p4 bra CONSUME;
    // producer: stage reuse waits for the consumers of tile i - 2 (parity of its phase)
    setp.lt.u32 %p5, %r1, 2;
    @%p5 bra PRODUCE;
    xor.b32 %r9, %r3, 1;
WAIT_EMPTY:
    mbarrier.try_wait.parity.shared::cta.b64 %p6, [%r6], %r9;
    @!%p6 bra WAIT_EMPTY;
PRODUCE:
    mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r5], {tile};
    mov.u32 %r21, %ctaid.x;
    add.u32 %r22, %r1, %r21;
    mul.lo.u32 %r10, %r22, {rows};
    mov.u32 %r11, 0;
BOXES:
    shl.b32 %r12, %r11, 5;
    mul.lo.u32 %r13, %r11, {boxbytes};
    add.u32 %r13, %r13, %r8;
    cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r13], [%rd1, {{%r12, %r10}}], [%r5];
    add.u32 %r11, %r11, 1;
    setp.lt.u32 %p5, %r11, 4;
    @%p5 bra BOXES;
CONSUME:
WAIT_FULL:
    mbarrier.try_wait.parity.shared::cta.b64 %p6, [%r5], %r3;
    @!%p6 bra WAIT_FULL;
    shr.u32 %r14, %r0, 5;
    mul.lo.u32 %r15, %r14, {boxbytes};
    add.u32 %r15, %r15, %r8;
    and.b32 %r16, %r0, 31;
    mov.u32 %r17, 0;
ROWS:
    // element (row r, lane c) of a 128B-swizzled box: chunk (c / 4) ^ (r % 8), byte 4 * (c % 4)
    shr.u32 %r18, %r16, 2;
    xor.b32 %r18, %r18, %r17;
    shl.b32 %r18, %r18, 4;
    and.b32 %r19, %r16, 3;
    shl.b32 %r19, %r19, 2;
    add.u32 %r18, %r18, %r19;
    shl.b32 %r20, %r17, 7;
    add.u32 %r18, %r18, %r20;
    add.u32 %r18, %r18, %r15;
    ld.shared.f32 %f2, [%r18];
    add.f32 %f1, %f1, %f2;
    add.u32 %r17, %r17, 1;
    setp.lt.u32 %p5, %r17, {rows};
    @%p5 bra ROWS;
    mbarrier.arrive.release.cta.shared::cta.b64 _, [%r6];
    add.u32 %r1, %r1, 1;
    setp.lt.u32 %p5, %r1, {tiles};
    @%p5 bra LOOP;
    ld.param.u64 %rd2, [pipe_out];
    mov.u32 %r23, %ctaid.x;
    mad.lo.u32 %r24, %r23, {threads}, %r0;
    mul.wide.u32 %rd3, %r24, 4;
    add.s64 %rd4, %rd2, %rd3;
    st.global.f32 [%rd4], %f1;
    ret;
}}
"#,
        stages = 2 * tile,
        threads = THREADS,
        tile = tile,
        rows = ROWS,
        tiles = TILES,
        boxbytes = tile / 4,
    );
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}"));
    let mut dev = Device::new();
    let src = dev.upload(&t.bytes);
    let out = dev.alloc(CTAS * COLS * 4);
    let args = [
        KernelArg::TensorMap(t.map(src).unwrap()),
        KernelArg::Ptr(out),
    ];
    let cfg = LaunchConfig {
        grid: [CTAS as u32, 1, 1],
        ..config()
    };
    let stats = dev
        .launch(&module, "pipe", &cfg, &args)
        .unwrap_or_else(|e| panic!("{e}"));
    // The cost model counts the in-bounds rows the boxes read (CTA k: TILES - k tiles),
    // 16 sectors of 32 bytes per 512-byte row; the kernel reads no other global memory.
    let rows: usize = (0..CTAS).map(|k| (TILES - k) * ROWS).sum();
    assert_eq!(stats.profile.global_read_bytes, (rows * COLS * 4) as u64);
    assert_eq!(
        stats.profile.global_read_sectors,
        (rows * COLS * 4 / 32) as u64
    );
    let got: Vec<f32> = dev
        .read(out, CTAS * COLS * 4)
        .unwrap()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    for (k, c) in (0..CTAS).flat_map(|k| (0..COLS).map(move |c| (k, c))) {
        // Same order of additions as the kernel: tile by tile, row by row; rows past the
        // tensor's end are zero fill.
        let want: f32 = (k * ROWS..(TILES + k) * ROWS).fold(0.0, |s, r| {
            s + values.get(r * COLS + c).copied().unwrap_or(0.0)
        });
        assert_eq!(got[k * COLS + c], want, "CTA {k} column {c}");
    }
}

/// `elect.sync` picks one lane of the member mask: every member gets its index, the
/// predicate is true in that lane only.
#[test]
fn elect_sync_elects_one_member() {
    for first in [0u32, 5, 17] {
        let mask = u32::MAX << first;
        let ptx = format!(
            r#"
.version 8.3
.target sm_90a
.address_size 64
.visible .entry e(.param .u64 e_out)
{{
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    mov.u32 %r0, %laneid;
    mov.u32 %r1, 99;
    mov.u32 %r2, 7;
    setp.lt.u32 %p1, %r0, {first};
    @%p1 bra DONE;
    elect.sync %r1|%p2, {mask};
    selp.u32 %r2, 1, 0, %p2;
DONE:
    ld.param.u64 %rd1, [e_out];
    mul.wide.u32 %rd2, %r0, 8;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v2.u32 [%rd3], {{%r1, %r2}};
    ret;
}}
"#
        );
        let module = Module::parse(&ptx).unwrap();
        let mut dev = Device::new();
        let out = dev.alloc(32 * 8);
        let cfg = LaunchConfig {
            grid: [1, 1, 1],
            block: [32, 1, 1],
            dynamic_shared_bytes: 0,
        };
        dev.launch(&module, "e", &cfg, &[KernelArg::Ptr(out)])
            .unwrap();
        let v = dev.read(out, 256).unwrap();
        let word = |i: usize| u32::from_le_bytes(v[4 * i..4 * i + 4].try_into().unwrap());
        let leaders: Vec<u32> = (first..32)
            .filter(|&l| word(2 * l as usize + 1) == 1)
            .collect();
        assert_eq!(leaders.len(), 1, "mask {mask:#x}: one leader");
        let leader = leaders[0];
        assert!(mask & (1 << leader) != 0, "the leader is a member");
        for l in 0..32usize {
            let (d, p) = (word(2 * l), word(2 * l + 1));
            if (l as u32) < first {
                assert_eq!((d, p), (99, 7), "lane {l} did not execute it");
            } else {
                assert_eq!(d, leader, "lane {l} gets the leader's index");
            }
        }
    }
}

/// `setmaxnreg` is accepted with a count that is a multiple of 8 in 24..=256 and rejected
/// otherwise; `prefetch.tensormap` and the proxy fences are accepted.
#[test]
fn setmaxnreg_counts_and_accepted_hints() {
    let ptx = |n: u32| {
        format!(
            ".version 8.3\n.target sm_90a\n.address_size 64\n.visible .entry s(.param .u64 s_p)\n{{\n    .reg .b64 %rd<2>;\n    setmaxnreg.inc.sync.aligned.u32 {n};\n    setmaxnreg.dec.sync.aligned.u32 {n};\n    ld.param.u64 %rd1, [s_p];\n    prefetch.tensormap [%rd1];\n    fence.proxy.async.shared::cta;\n    fence.proxy.async.global;\n    fence.proxy.tensormap::generic.release.gpu;\n    ret;\n}}\n"
        )
    };
    for n in [24, 240, 256] {
        Module::parse(&ptx(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    for n in [16, 100, 264] {
        assert!(
            Module::parse(&ptx(n)).is_err(),
            "setmaxnreg {n} must be rejected"
        );
    }
}

/// `TensorMap::encode_tiled` applies `cuTensorMapEncodeTiled`'s rules.
#[test]
fn encode_tiled_validates_like_the_driver() {
    let f32t = TensorMapDataType::Float32;
    let enc =
        |ty, addr: u64, dims: &[u64], strides: &[u64], boxes: &[u32], es: &[u32], sw, fill| {
            TensorMap::encode_tiled(
                ty,
                dims.len() as u32,
                addr,
                dims,
                strides,
                boxes,
                es,
                TensorMapInterleave::None,
                sw,
                TensorMapL2Promotion::None,
                fill,
            )
        };
    let none = TensorMapSwizzle::None;
    let zero = TensorMapFloatOobFill::None;
    let base = 1u64 << 32;
    assert!(enc(f32t, base, &[64, 64], &[256], &[32, 8], &[1, 1], none, zero).is_ok());
    let cases: Vec<(Result<TensorMap, TensorMapError>, TensorMapError)> = vec![
        (
            enc(
                f32t,
                base + 8,
                &[64, 64],
                &[256],
                &[32, 8],
                &[1, 1],
                none,
                zero,
            ),
            TensorMapError::AddressAlignment(base + 8),
        ),
        (
            enc(f32t, base, &[64, 64], &[264], &[32, 8], &[1, 1], none, zero),
            TensorMapError::GlobalStride { dim: 0, value: 264 },
        ),
        (
            enc(f32t, base, &[64, 0], &[256], &[32, 8], &[1, 1], none, zero),
            TensorMapError::GlobalDim { dim: 1, value: 0 },
        ),
        (
            enc(
                f32t,
                base,
                &[64, 64],
                &[256],
                &[32, 257],
                &[1, 1],
                none,
                zero,
            ),
            TensorMapError::BoxDim { dim: 1, value: 257 },
        ),
        (
            enc(f32t, base, &[64, 64], &[256], &[6, 8], &[1, 1], none, zero),
            TensorMapError::BoxInnerBytes { bytes: 24 },
        ),
        (
            enc(f32t, base, &[64, 64], &[256], &[32, 8], &[1, 9], none, zero),
            TensorMapError::ElementStride { dim: 1, value: 9 },
        ),
        (
            enc(
                f32t,
                base,
                &[64, 64],
                &[256],
                &[32, 8],
                &[1, 1],
                TensorMapSwizzle::B64,
                zero,
            ),
            TensorMapError::SwizzleSpan {
                bytes: 128,
                span: 64,
            },
        ),
        (
            enc(
                TensorMapDataType::Int32,
                base,
                &[64, 64],
                &[256],
                &[32, 8],
                &[1, 1],
                none,
                TensorMapFloatOobFill::NanRequestZeroFma,
            ),
            TensorMapError::NanFillType(TensorMapDataType::Int32),
        ),
        (
            enc(
                f32t,
                base,
                &[64, 64],
                &[256, 16],
                &[32, 8],
                &[1, 1],
                none,
                zero,
            ),
            TensorMapError::Length {
                what: "globalStrides",
                len: 2,
                expected: 1,
            },
        ),
        (
            enc(f32t, base, &[2; 6], &[16; 5], &[4; 6], &[1; 6], none, zero),
            TensorMapError::Rank(6),
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, Err(want));
    }
}

/// The checker's findings: each planted bug is reported with its kind; the same kernel
/// without the bug passes.
#[test]
fn planted_async_copy_bugs_are_reported() {
    let mut rng = Rng::new(0x91a7);
    let (t, coords) = random_tensor(
        &mut rng,
        2,
        TensorMapDataType::Float16,
        TensorMapSwizzle::B128,
    );
    let clean = t.kernel();
    let r = run(&clean, &t, &coords, None);
    r.result.unwrap_or_else(|e| panic!("clean kernel: {e}"));
    check_box(&t, &coords, &r.out, "clean kernel");
    let cases = [
        (Plant::NoInit, CheckKind::MbarrierUninitialized),
        (Plant::ExtraArrival, CheckKind::MbarrierArrivals),
        (Plant::ShortExpectTx, CheckKind::MbarrierTxCount),
        (Plant::MissingArrival, CheckKind::MbarrierNeverCompletes),
        (Plant::DstOffset(16), CheckKind::Misaligned),
        (Plant::DstPastEnd, CheckKind::OutOfBounds),
        (Plant::NoWait, CheckKind::PendingAsyncCopyRead),
    ];
    for (plant, kind) in cases {
        let k = Kernel { plant, ..clean };
        match run(&k, &t, &coords, None).result {
            Err(EmuError::MemoryCheck(reports)) => assert!(
                reports.iter().any(|r| r.kind == kind),
                "{plant:?}: expected {kind:?}, got {reports:#?}"
            ),
            other => panic!("{plant:?}: expected {kind:?}, got {other:?}"),
        }
    }
}

/// Without swizzling a box needs 16-byte alignment only: 16 passes, 8 is reported.
#[test]
fn unswizzled_boxes_need_16_byte_alignment() {
    let mut rng = Rng::new(0xa119);
    let (t, coords) = random_tensor(
        &mut rng,
        3,
        TensorMapDataType::Uint16,
        TensorMapSwizzle::None,
    );
    let k = Kernel {
        plant: Plant::DstOffset(16),
        ..t.kernel()
    };
    let r = run(&k, &t, &coords, None);
    r.result.unwrap_or_else(|e| panic!("{e}"));
    check_box(&t, &coords, &r.out, "16-byte aligned box");
    let k = Kernel {
        plant: Plant::DstOffset(8),
        ..k
    };
    match run(&k, &t, &coords, None).result {
        Err(EmuError::MemoryCheck(reports)) => {
            assert!(
                reports.iter().any(|r| r.kind == CheckKind::Misaligned),
                "{reports:#?}"
            )
        }
        other => panic!("expected a misaligned box, got {other:?}"),
    }
}

/// Forms the emulator does not implement are errors naming the instruction, not skips.
#[test]
fn unsupported_async_forms_are_named() {
    let body = [
        "cp.async.bulk.tensor.2d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [smem], [%rd1, {%r1, %r1}], [bar], {%h1};",
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [smem], [%rd1, {%r1, %r1}], [bar], %h1;",
        "cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.tile.bulk_group [%rd1, {%r1, %r1}], [smem];",
        "mbarrier.pending_count.b64 %r1, %rd1;",
        "cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [smem], [smem], 16, [bar];",
    ];
    for ins in body {
        let ptx = format!(
            ".version 8.3\n.target sm_90a\n.address_size 64\n.visible .entry u()\n{{\n    .reg .b16 %h<2>;\n    .reg .b32 %r<2>;\n    .reg .b64 %rd<2>;\n    .shared .align 128 .b8 smem[256];\n    .shared .align 8 .b64 bar;\n    {ins}\n    ret;\n}}\n"
        );
        match Module::parse(&ptx) {
            Err(EmuError::Unsupported { what, .. }) => {
                let opcode = ins.split_whitespace().next().unwrap_or("");
                let head = &opcode[..opcode.find('.').unwrap_or(opcode.len())];
                assert!(what.contains(head), "`{ins}`: {what}");
            }
            other => panic!("`{ins}` should be unsupported, got {other:?}"),
        }
    }
}

/// A tensor operand takes a `{...}` vector of coordinates after the map, nothing else:
/// nested addresses are a parse error (not a recursion as deep as the input).
#[test]
fn tensor_operand_syntax() {
    let nested = format!("{}%rd1{}", "[%rd1, ".repeat(100_000), "]".repeat(100_000));
    let ptx = format!(
        ".version 8.3\n.target sm_90a\n.address_size 64\n.visible .entry t()\n{{\n    .reg .b64 %rd<2>;\n    .shared .align 128 .b8 smem[256];\n    cp.async.bulk.tensor.1d.global.shared::cta.tile.bulk_group {nested}, [smem];\n    ret;\n}}\n"
    );
    match Module::parse(&ptx) {
        Err(EmuError::Parse { message, .. }) => {
            assert!(message.contains("coordinates"), "{message}")
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

/// A swizzled box that ends inside a 128-byte segment (64- or 32-byte rows, an odd number
/// of them): its chunks are permuted within the segment like any other, and the rest of
/// the segment keeps what it held.
#[test]
fn swizzled_box_ending_inside_a_segment() {
    let mut rng = Rng::new(0x5e9_3e47);
    for (swizzle, inner) in [(TensorMapSwizzle::B128, 64), (TensorMapSwizzle::B64, 32)] {
        for rows in [1u32, 3, 5] {
            let dims = vec![inner as u64 + 20, rows as u64 + 4];
            let strides = vec![(dims[0]).next_multiple_of(16)];
            let bytes: Vec<u8> = (0..strides[0] * dims[1])
                .map(|_| rng.next_u64() as u8)
                .collect();
            let t = Tensor {
                ty: TensorMapDataType::Uint8,
                dims,
                strides,
                boxes: vec![inner, rows],
                estrides: vec![1, 1],
                swizzle,
                nan_fill: false,
                bytes,
            };
            let coords = [
                (rng.next_u64() % 30) as i64 - 5,
                (rng.next_u64() % 6) as i64 - 1,
            ];
            let r = run(&t.kernel(), &t, &coords, None);
            let what = format!("{swizzle:?} box [{inner}, {rows}] at {coords:?}");
            r.result.unwrap_or_else(|e| panic!("{what}: {e}"));
            check_box(&t, &coords, &r.out, &what);
        }
    }
}

/// Sizes, addresses and tensor maps at the ends of their ranges are reported as findings,
/// never a panic: a bulk copy of ~4 GiB to the top of the address space, and a box of a
/// tensor whose dims times strides overflow 64-bit addresses.
#[test]
fn extreme_operands_are_findings() {
    let ptx = ".version 8.3\n.target sm_90a\n.address_size 64\n\
        .visible .entry x(.param .align 64 .b8 x_map[128], .param .u64 x_src)\n{\n\
        .reg .pred %p<2>;\n    .reg .b32 %r<4>;\n    .reg .b64 %rd<4>;\n\
        .shared .align 1024 .b8 smem[4096];\n    .shared .align 8 .b64 bar;\n\
        mbarrier.init.shared::cta.b64 [bar], 2;\n    ld.param.u64 %rd1, [x_src];\n\
        mov.u32 %r1, 0xfffffff0;\n\
        cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r1], [%rd1], %r1, [bar];\n\
        mov.u32 %r2, 0x7ffffff0;\n    mov.b64 %rd2, x_map;\n\
        cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [smem], [%rd2, {%r2, %r2}], [bar];\n\
        ret;\n}\n";
    let module = Module::parse(ptx).unwrap_or_else(|e| panic!("{e}"));
    let mut dev = Device::new();
    let src = dev.alloc(64);
    let map = TensorMap::encode_tiled(
        TensorMapDataType::Float32,
        2,
        src.0,
        &[1 << 32, 1 << 32],
        &[(1 << 40) - 16],
        &[4, 2],
        &[1, 1],
        TensorMapInterleave::None,
        TensorMapSwizzle::None,
        TensorMapL2Promotion::None,
        TensorMapFloatOobFill::None,
    )
    .unwrap();
    let cfg = LaunchConfig {
        block: [1, 1, 1],
        ..config()
    };
    let args = [KernelArg::TensorMap(map), KernelArg::Ptr(src)];
    match dev.launch(&module, "x", &cfg, &args) {
        Err(EmuError::MemoryCheck(reports)) => {
            let kinds: Vec<CheckKind> = reports.iter().map(|r| r.kind).collect();
            assert!(
                kinds.contains(&CheckKind::Misaligned) || kinds.contains(&CheckKind::OutOfBounds),
                "{reports:#?}"
            );
            let tensor_line =
                1 + ptx.lines().position(|l| l.contains("bulk.tensor")).unwrap() as u32;
            assert!(
                reports
                    .iter()
                    .any(|r| r.line == tensor_line && r.kind == CheckKind::OutOfBounds),
                "the box's elements lie outside every allocation: {reports:#?}"
            );
        }
        other => panic!("expected findings, got {other:?}"),
    }
}

/// `try_wait` may time out: a thread that waits first and only then does the arrival
/// that completes the phase (when its wait returned false) finishes, and the kernel
/// counts at least one timeout; with nothing left to arrive, the same wait is reported.
#[test]
fn try_wait_times_out_before_a_deadlock_is_reported() {
    let ptx = |arrive: &str| {
        format!(
            ".version 8.3\n.target sm_90a\n.address_size 64\n\
             .visible .entry t(.param .u64 t_out)\n{{\n\
             \x20   .reg .pred %p<2>;\n    .reg .b32 %r<4>;\n    .reg .b64 %rd<2>;\n\
             \x20   .shared .align 8 .b64 bar;\n\
             \x20   mbarrier.init.shared::cta.b64 [bar], 1;\n    mov.u32 %r1, 0;\n\
             LOOP:\n    mbarrier.try_wait.parity.shared::cta.b64 %p1, [bar], 0;\n\
             \x20   @%p1 bra DONE;\n    add.u32 %r1, %r1, 1;\n    {arrive}\n    bra LOOP;\n\
             DONE:\n    ld.param.u64 %rd1, [t_out];\n    st.global.u32 [%rd1], %r1;\n    ret;\n}}\n"
        )
    };
    let cfg = LaunchConfig {
        block: [1, 1, 1],
        ..config()
    };
    let mut dev = Device::new();
    let out = dev.alloc(4);
    let module = Module::parse(&ptx("mbarrier.arrive.shared::cta.b64 _, [bar];")).unwrap();
    dev.launch(&module, "t", &cfg, &[KernelArg::Ptr(out)])
        .unwrap_or_else(|e| panic!("{e}"));
    let timeouts = u32::from_le_bytes(dev.read(out, 4).unwrap().try_into().unwrap());
    assert!(timeouts >= 1, "the wait returned true before the arrival");
    let module = Module::parse(&ptx("// no arrival")).unwrap();
    match dev.launch(&module, "t", &cfg, &[KernelArg::Ptr(out)]) {
        Err(EmuError::MemoryCheck(reports)) => assert!(
            reports
                .iter()
                .any(|r| r.kind == CheckKind::MbarrierNeverCompletes),
            "{reports:#?}"
        ),
        other => panic!("expected a never-completing wait, got {other:?}"),
    }
}

/// A tensor copy whose dimension differs from its map's rank is an error naming both.
#[test]
fn tensor_copy_rank_must_match_the_map() {
    let mut rng = Rng::new(0x4a4c);
    let (t, coords) = random_tensor(
        &mut rng,
        3,
        TensorMapDataType::Float32,
        TensorMapSwizzle::None,
    );
    let k = Kernel {
        rank: 2,
        ..t.kernel()
    };
    match run(&k, &t, &coords, None).result {
        Err(EmuError::Runtime { message, .. }) => {
            assert!(
                message.contains("2d") && message.contains("rank 3"),
                "{message}"
            )
        }
        other => panic!("expected a rank mismatch error, got {other:?}"),
    }
}

/// Forms ptxas rejects are parse errors: a `.param` symbol as the tensor map (it takes a
/// generic address), a register or an out-of-range code for a mode field.
#[test]
fn forms_ptxas_rejects_are_parse_errors() {
    let cases = [
        (
            "cp.async.bulk.tensor.1d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [smem], [u_map, {%r1}], [bar];",
            "cvta.param",
        ),
        (
            "tensormap.replace.tile.elemtype.global.b1024.b32 [%rd1], %r1;",
            "immediate",
        ),
        (
            "tensormap.replace.tile.swizzle_mode.global.b1024.b32 [%rd1], 4;",
            "immediate",
        ),
        (
            "tensormap.replace.tile.box_dim.global.b1024.b32 [%rd1], %r1, %r1;",
            "ordinal",
        ),
        ("setmaxnreg.inc.sync.aligned.u32 %r1;", "multiple of 8"),
    ];
    for (ins, needle) in cases {
        let ptx = format!(
            ".version 8.3\n.target sm_90a\n.address_size 64\n.visible .entry u(.param .align 64 .b8 u_map[128])\n{{\n    .reg .b32 %r<2>;\n    .reg .b64 %rd<2>;\n    .shared .align 128 .b8 smem[256];\n    .shared .align 8 .b64 bar;\n    {ins}\n    ret;\n}}\n"
        );
        match Module::parse(&ptx) {
            Err(EmuError::Parse { message, .. }) => {
                assert!(message.contains(needle), "`{ins}`: {message}")
            }
            other => panic!("`{ins}` should be a parse error, got {other:?}"),
        }
    }
}

/// Triton 3.9's device-side tensor descriptors (`tl.make_tensor_descriptor`, compiled for
/// sm_90a by `fixtures/gen_tma.py`): each program builds two maps in shared memory with
/// `tensormap.replace`, copies them to its global scratch with `tensormap.cp_fenceproxy`,
/// loads a 16 x 32 f32 box with 128-byte swizzling, doubles it and stores it back through
/// the second map. The tensor's edges cut the boxes (zero fill, clipped stores).
#[test]
fn triton_device_side_descriptors_copy_a_tensor() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tma_copy_sm90a.ptx");
    let ptx = std::fs::read_to_string(path).expect("fixture");
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}"));
    let (m, n, bm, bn) = (40usize, 96usize, 16usize, 32usize);
    let mut rng = Rng::new(0x7417_0c09);
    let x = rng.vec(m * n, -4.0, 4.0);
    let mut dev = Device::new();
    let xp = dev.upload(&x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let yp = dev.alloc(m * n * 4);
    let grid = [m.div_ceil(bm) as u32, n.div_ceil(bn) as u32, 1];
    // Triton's global scratch: 256 bytes per program (the kernel's metadata).
    let scratch = dev.alloc(256 * (grid[0] * grid[1]) as usize);
    let cfg = LaunchConfig {
        grid,
        block: [128, 1, 1],
        dynamic_shared_bytes: 2056,
    };
    let args = [
        KernelArg::Ptr(xp),
        KernelArg::Ptr(yp),
        KernelArg::I32(m as i32),
        KernelArg::I32(n as i32),
        KernelArg::Ptr(scratch),
        KernelArg::U64(0),
    ];
    dev.launch(&module, "tma_copy", &cfg, &args)
        .unwrap_or_else(|e| panic!("{e}"));
    let y: Vec<f32> = dev
        .read(yp, m * n * 4)
        .unwrap()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    for (i, (&got, &v)) in y.iter().zip(&x).enumerate() {
        assert_eq!(got, 2.0 * v, "element ({}, {})", i / n, i % n);
    }
}

/// Triton 3.9's host-side tensor descriptors (`TensorDescriptor` arguments, sm_90a,
/// `fixtures/gen_tma.py`): each descriptor is a by-value `.param .align 64 .b8 [128]`
/// map (built here with [`TensorMap::encode_tiled`], 128-byte swizzle as Triton's launcher
/// chooses for 128-byte rows) followed by its shape and strides; the kernel adds 1 to a
/// 16 x 32 box and stores it through the second map. (It reads and writes shared memory
/// at the same places, so this checks the maps' plumbing; the column sums below check
/// the swizzle against Triton's reading of it.)
#[test]
fn triton_host_side_descriptors_by_value() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tma_host_sm90a.ptx");
    let ptx = std::fs::read_to_string(path).expect("fixture");
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}"));
    let (m, n, bm, bn) = (40usize, 96usize, 16usize, 32usize);
    let mut rng = Rng::new(0x0057_d35c);
    let x = rng.vec(m * n, -4.0, 4.0);
    let mut dev = Device::new();
    let xp = dev.upload(&x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let yp = dev.alloc(m * n * 4);
    let map = |p: DevicePtr| {
        TensorMap::encode_tiled(
            TensorMapDataType::Float32,
            2,
            p.0,
            &[n as u64, m as u64],
            &[n as u64 * 4],
            &[bn as u32, bm as u32],
            &[1, 1],
            TensorMapInterleave::None,
            TensorMapSwizzle::B128,
            TensorMapL2Promotion::L2_128B,
            TensorMapFloatOobFill::None,
        )
        .unwrap()
    };
    let desc = |p: DevicePtr| {
        [
            KernelArg::TensorMap(map(p)),
            KernelArg::I32(m as i32),
            KernelArg::I32(n as i32),
            KernelArg::I64(n as i64),
            KernelArg::I64(1),
        ]
    };
    let mut args: Vec<KernelArg> = desc(xp).into_iter().chain(desc(yp)).collect();
    args.extend([KernelArg::U64(0), KernelArg::U64(0)]);
    let cfg = LaunchConfig {
        grid: [m.div_ceil(bm) as u32, n.div_ceil(bn) as u32, 1],
        block: [128, 1, 1],
        dynamic_shared_bytes: 2056,
    };
    dev.launch(&module, "tma_host", &cfg, &args)
        .unwrap_or_else(|e| panic!("{e}"));
    let y: Vec<f32> = dev
        .read(yp, m * n * 4)
        .unwrap()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    for (i, (&got, &v)) in y.iter().zip(&x).enumerate() {
        assert_eq!(got, v + 1.0, "element ({}, {})", i / n, i % n);
    }
}

/// Column sums of TMA boxes in Triton 3.9 kernels (`fixtures/gen_tma.py`): Triton reads
/// the swizzled box back with its own swizzle arithmetic, so a box laid out differently
/// would mix columns (the test fails with an unswizzled map). Rows of 32, 16 and 8 f32
/// take the 128-, 64- and 32-byte swizzles. Out-of-bounds rows add zeros.
#[test]
fn triton_reads_tma_boxes_with_its_swizzle() {
    let cases = [
        ("tma_colsum", 32usize, TensorMapSwizzle::B128, 2056u32),
        ("tma_colsum64", 16, TensorMapSwizzle::B64, 1032),
        ("tma_colsum32", 8, TensorMapSwizzle::B32, 520),
    ];
    for (fixture, bn, swizzle, shared) in cases {
        let path = format!(
            "{}/fixtures/{fixture}_sm90a.ptx",
            env!("CARGO_MANIFEST_DIR")
        );
        let ptx = std::fs::read_to_string(path).expect("fixture");
        let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}"));
        let (m, n, bm) = (40usize, 96usize, 16usize);
        let mut rng = Rng::new(0x0c01_5e11 + bn as u64);
        let x = rng.vec(m * n, -4.0, 4.0);
        let mut dev = Device::new();
        let xp = dev.upload(&x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        let blocks = m.div_ceil(bm);
        let out = dev.alloc(blocks * n * 4);
        let map = TensorMap::encode_tiled(
            TensorMapDataType::Float32,
            2,
            xp.0,
            &[n as u64, m as u64],
            &[n as u64 * 4],
            &[bn as u32, bm as u32],
            &[1, 1],
            TensorMapInterleave::None,
            swizzle,
            TensorMapL2Promotion::None,
            TensorMapFloatOobFill::None,
        )
        .unwrap();
        let args = [
            KernelArg::TensorMap(map),
            KernelArg::I32(m as i32),
            KernelArg::I32(n as i32),
            KernelArg::I64(n as i64),
            KernelArg::I64(1),
            KernelArg::Ptr(out),
            KernelArg::I32(n as i32),
            KernelArg::U64(0),
            KernelArg::U64(0),
        ];
        let cfg = LaunchConfig {
            grid: [blocks as u32, n.div_ceil(bn) as u32, 1],
            block: [128, 1, 1],
            dynamic_shared_bytes: shared,
        };
        dev.launch(&module, "tma_colsum", &cfg, &args)
            .unwrap_or_else(|e| panic!("{fixture}: {e}"));
        let got: Vec<f32> = dev
            .read(out, blocks * n * 4)
            .unwrap()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        for b in 0..blocks {
            for c in 0..n {
                let want: f64 = (b * bm..((b + 1) * bm).min(m))
                    .map(|r| f64::from(x[r * n + c]))
                    .sum();
                let g = f64::from(got[b * n + c]);
                assert!(
                    (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{fixture}: block {b} column {c}: {g} vs {want}"
                );
            }
        }
    }
}

/// mbarrier phases by hand, one thread, from the PTX ISA: a phase completes when its
/// pending arrivals and its transaction count both reach zero; `test_wait.parity P` is
/// true when the phase of parity P before the current one completed; the state form
/// when the phase `arrive` returned has completed.
#[test]
fn mbarrier_phases_follow_the_ptx_isa() {
    // (instruction, recorded predicate): each test_wait result is stored in order.
    let steps = [
        "mbarrier.init.shared::cta.b64 [bar], 3;",
        "mbarrier.arrive.shared::cta.b64 %rd5, [bar], 2;", // pending 1, state = phase 0
        "mbarrier.test_wait.parity.shared::cta.b64 %p1, [bar], 0;", // 0: phase 0 open
        "mbarrier.expect_tx.shared::cta.b64 [bar], 32;",
        "mbarrier.arrive.shared::cta.b64 %rd6, [bar];", // pending 0, tx 32: still open
        "mbarrier.test_wait.parity.shared::cta.b64 %p1, [bar], 0;", // 0
        "mbarrier.complete_tx.shared::cta.b64 [bar], 16;",
        "mbarrier.test_wait.shared::cta.b64 %p1, [bar], %rd5;", // 0: tx 16 left
        "mbarrier.complete_tx.shared::cta.b64 [bar], 16;",      // phase 0 completes
        "mbarrier.test_wait.parity.shared::cta.b64 %p1, [bar], 0;", // 1
        "mbarrier.test_wait.shared::cta.b64 %p1, [bar], %rd5;", // 1
        "mbarrier.test_wait.parity.shared::cta.b64 %p1, [bar], 1;", // 0: phase 1 open
        "mbarrier.arrive.noComplete.shared::cta.b64 %rd7, [bar], 2;", // pending 1
        "mbarrier.test_wait.parity.shared::cta.b64 %p1, [bar], 1;", // 0
        "mbarrier.arrive.shared::cta.b64 %rd7, [bar];",         // phase 1 completes
        "mbarrier.test_wait.parity.shared::cta.b64 %p1, [bar], 1;", // 1
        "mbarrier.test_wait.parity.shared::cta.b64 %p1, [bar], 0;", // 0: phase 2 open
        "mbarrier.test_wait.shared::cta.b64 %p1, [bar], %rd6;", // 1: phase 0 done
    ];
    let want = [0u32, 0, 0, 1, 1, 0, 0, 1, 0, 1];
    let mut body = String::new();
    let mut k = 0;
    for s in steps {
        body.push_str("    ");
        body.push_str(s);
        body.push('\n');
        if s.contains("test_wait") {
            body.push_str(&format!(
                "    selp.u32 %r1, 1, 0, %p1;\n    st.global.u32 [%rd1+{}], %r1;\n",
                4 * k
            ));
            k += 1;
        }
    }
    let ptx = format!(
        ".version 8.3\n.target sm_90a\n.address_size 64\n.visible .entry m(.param .u64 m_out)\n{{\n    .reg .pred %p<2>;\n    .reg .b32 %r<2>;\n    .reg .b64 %rd<8>;\n    .shared .align 8 .b64 bar;\n    ld.param.u64 %rd1, [m_out];\n{body}    ret;\n}}\n"
    );
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}"));
    let mut dev = Device::new();
    let out = dev.alloc(4 * want.len());
    let cfg = LaunchConfig {
        block: [1, 1, 1],
        ..config()
    };
    dev.launch(&module, "m", &cfg, &[KernelArg::Ptr(out)])
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<u32> = dev
        .read(out, 4 * want.len())
        .unwrap()
        .chunks(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, want);
}

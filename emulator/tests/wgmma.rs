//! `wgmma` conformance: one generator writes a one-warpgroup PTX kernel for each variant
//! (element type, N, A from registers or a descriptor, swizzle mode, transposes, scale-d,
//! imm-scale, chained k-steps). The kernel copies a shared-memory image that the host
//! laid out here from the PTX ISA's canonical layouts, builds the matrix descriptors,
//! runs `wgmma.mma_async` / `commit_group` / `wait_group` and stores every thread's
//! accumulators. The host maps them back through the ISA's D fragment layout and
//! compares with an f64 reference on seeded random inputs. Planted bugs (an accumulator
//! read or written before `wait_group`, a shared operand overwritten while in flight, a
//! missing `wgmma.fence`) must be reported as their checker findings at the edited line.
//! Triton's own sm_90a matmuls (`emulator/fixtures/wgmma_*`, an independent producer of
//! descriptors and fragment layouts) run against the reference too, and edited copies
//! of them must report their planted bugs.

mod triton_support;

use jagged_emu::{CheckKind, CheckReport, Device, EmuError, KernelArg, LaunchConfig, Module};
use triton_support::{Rng, f32_bytes, f32s, poisoned, rel_err};

/// The 16-bit element types of A and B.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Elem {
    F16,
    Bf16,
}

impl Elem {
    fn name(self) -> &'static str {
        match self {
            Elem::F16 => "f16",
            Elem::Bf16 => "bf16",
        }
    }

    /// The bits of `x` rounded to this type, and the rounded value.
    fn round(self, x: f32) -> (u16, f64) {
        match self {
            Elem::F16 => {
                let h = half::f16::from_f32(x);
                (h.to_bits(), h.to_f64())
            }
            Elem::Bf16 => {
                let h = half::bf16::from_f32(x);
                (h.to_bits(), h.to_f64())
            }
        }
    }
}

/// Where A comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ASrc {
    /// The 4 x .b32 register fragment.
    Regs,
    /// A shared-memory descriptor, M-major (`imm-trans-a = 1`) when true.
    Desc { trans: bool },
}

/// How scale-d is given.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ScaleD {
    /// An immediate 0 or 1.
    Imm(bool),
    /// A predicate set from a kernel parameter.
    Pred(bool),
}

impl ScaleD {
    fn on(self) -> bool {
        match self {
            ScaleD::Imm(b) | ScaleD::Pred(b) => b,
        }
    }
}

/// A bug planted in the generated kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Plant {
    /// An accumulator is read (added to itself) between commit and wait.
    ReadAccumulator,
    /// An accumulator is overwritten between commit and wait.
    WriteAccumulator,
    /// The B tile's first word is stored between commit and wait.
    OverwriteB,
    /// No `wgmma.fence` before the first mma_async.
    NoFence,
    /// An accumulator is written after the fence, before the mma_async.
    TouchAfterFence,
}

/// One kernel variant.
#[derive(Clone, Copy, Debug)]
struct Variant {
    elem: Elem,
    n: usize,
    a: ASrc,
    /// Swizzle of both shared operands: 0 (none), 32, 64 or 128 bytes.
    swizzle: u32,
    trans_b: bool,
    scale_d: ScaleD,
    neg_a: bool,
    neg_b: bool,
    /// Chained mma_asyncs on the same accumulators: K = 16 * ksteps.
    ksteps: usize,
    plant: Option<Plant>,
}

impl Variant {
    fn new(elem: Elem, n: usize, a: ASrc, swizzle: u32, trans_b: bool) -> Variant {
        Variant {
            elem,
            n,
            a,
            swizzle,
            trans_b,
            scale_d: ScaleD::Imm(true),
            neg_a: false,
            neg_b: false,
            ksteps: 1,
            plant: None,
        }
    }
}

/// A matrix of `rows` (M or N) by `k` 16-bit elements placed in shared memory in a
/// canonical layout, with the descriptor fields of each k-step of 16.
struct Tile {
    /// Byte offset of each element `(mn, k)` from the tile's start.
    offsets: Vec<Vec<usize>>,
    bytes: usize,
    lbo: u32,
    sbo: u32,
    /// The descriptor's start offset of each k-step.
    starts: Vec<u32>,
}

impl Tile {
    /// Lays out `rows x (16 ksteps)` K-major or MN-major with `swizzle`, from the PTX
    /// ISA's canonical layouts (core matrices of 8 rows of 16 bytes; with a swizzle of
    /// S bytes, rows of S bytes whose 16-byte chunks are permuted within each pattern
    /// of 8 rows by XOR with the 128-byte line index within the pattern).
    fn new(rows: usize, ksteps: usize, k_major: bool, swizzle: u32) -> Tile {
        let kt = 16 * ksteps;
        let s = swizzle as usize;
        // (logical offset, bytes, lbo, sbo, starts) per canonical form.
        let (logical, bytes, lbo, sbo, starts): (Box<dyn Fn(usize, usize) -> usize>, _, _, _, _) =
            match (k_major, s) {
                (true, 0) => {
                    // Core matrices along K at LBO = 128, 8-row groups at SBO.
                    let sbo = 128 * 2 * ksteps;
                    (
                        Box::new(move |mn, k| {
                            (mn % 8) * 16 + (mn / 8) * sbo + (k % 8) * 2 + (k / 8) * 128
                        }),
                        rows / 8 * sbo,
                        128,
                        sbo,
                        (0..ksteps).map(|st| 256 * st).collect::<Vec<_>>(),
                    )
                }
                (true, _) => {
                    // Rows of S bytes (S/2 elements of K); 8-row groups at SBO = 8 S; blocks
                    // of S/2 columns of K one after another.
                    let cols = s / 2;
                    let block = rows * s;
                    (
                        Box::new(move |mn, k| {
                            (k / cols) * block + (mn / 8) * 8 * s + (mn % 8) * s + (k % cols) * 2
                        }),
                        kt.div_ceil(cols) * block,
                        16,
                        8 * s,
                        (0..ksteps)
                            .map(|st| (16 * st / cols) * block + (16 * st % cols) * 2)
                            .collect(),
                    )
                }
                (false, 0) => {
                    // Core matrices of 8 k-rows x 8 MN elements; along MN at SBO = 128,
                    // along K at LBO.
                    let lbo = 128 * rows / 8;
                    (
                        Box::new(move |mn, k| {
                            (mn % 8) * 2 + (mn / 8) * 128 + (k % 8) * 16 + (k / 8) * lbo
                        }),
                        2 * ksteps * lbo,
                        lbo,
                        128,
                        (0..ksteps).map(|st| 2 * st * lbo).collect(),
                    )
                }
                (false, _) => {
                    // Rows of S bytes along MN (S/2 elements), one per k; 8-k groups at
                    // SBO = 8 S; MN blocks of S/2 at LBO.
                    let e = s / 2;
                    let sbo = 8 * s;
                    let lbo = sbo * 2 * ksteps;
                    (
                        Box::new(move |mn, k| {
                            (mn % e) * 2 + (mn / e) * lbo + (k % 8) * s + (k / 8) * sbo
                        }),
                        rows.div_ceil(e) * lbo,
                        lbo,
                        sbo,
                        (0..ksteps).map(|st| 2 * st * sbo).collect(),
                    )
                }
            };
        let physical = |x: usize| match s {
            0 => x,
            _ => {
                let (line, chunk) = (x / 128, (x % 128) / 16);
                x - chunk * 16 + (chunk ^ (line % (s / 16))) * 16
            }
        };
        let offsets = (0..rows)
            .map(|mn| (0..kt).map(|k| physical(logical(mn, k))).collect())
            .collect();
        Tile {
            offsets,
            bytes,
            lbo: lbo as u32,
            sbo: sbo as u32,
            starts: starts.into_iter().map(|x| x as u32).collect(),
        }
    }

    /// The descriptor's bits other than the start address (ISA bit positions: LBO >> 4
    /// at 16, SBO >> 4 at 32, swizzle code at 62: 1 = 128 B, 2 = 64 B, 3 = 32 B).
    fn desc_high(&self, swizzle: u32) -> u64 {
        let code: u64 = match swizzle {
            0 => 0,
            128 => 1,
            64 => 2,
            _ => 3,
        };
        (u64::from(self.lbo >> 4) << 16) | (u64::from(self.sbo >> 4) << 32) | (code << 62)
    }
}

/// Everything a variant's launch needs and the host reference.
struct Case {
    ptx: String,
    image: Vec<u8>,
    /// Per thread, 4 words per k-step: A's register fragment.
    afrag: Vec<u32>,
    /// Per thread, N / 2 initial accumulators.
    dinit: Vec<f32>,
    /// Reference D (64 x N) in f64, row-major.
    reference: Vec<f64>,
}

const SMEM_ALIGN: usize = 1024;

/// (row, col) of accumulator `i` of thread `tid`: warp w holds rows 16 w..; within a
/// warp, lane = 4 groupID + threadID_in_group; register i of group j = i / 4 is at row
/// groupID + 8 * ((i % 4) / 2), column 8 j + 2 threadID_in_group + i % 2.
fn d_position(tid: usize, i: usize) -> (usize, usize) {
    let (warp, lane) = (tid / 32, tid % 32);
    let (group, tig) = (lane / 4, lane % 4);
    (
        16 * warp + group + 8 * ((i % 4) / 2),
        8 * (i / 4) + 2 * tig + i % 2,
    )
}

/// (row, k) of the low half of A register `i` of thread `tid`: a0 row groupID, k
/// 2 threadID_in_group; a1 row + 8; a2 k + 8; a3 both (the high half is k + 1).
fn a_position(tid: usize, i: usize) -> (usize, usize) {
    let (warp, lane) = (tid / 32, tid % 32);
    let (group, tig) = (lane / 4, lane % 4);
    (16 * warp + group + 8 * (i % 2), 2 * tig + 8 * (i / 2))
}

fn build(v: &Variant, seed: u64) -> Case {
    let (n, kt) = (v.n, 16 * v.ksteps);
    let mut rng = Rng::new(seed);
    let mut quantized = |count: usize| -> Vec<(u16, f64)> {
        (0..count)
            .map(|_| v.elem.round(rng.uniform(-2.0, 2.0)))
            .collect()
    };
    let a = quantized(64 * kt); // row-major 64 x K
    let b = quantized(kt * n); // row-major K x N
    let dinit: Vec<f32> = (0..128 * n / 2)
        .map(|i| ((i * 7919) % 97) as f32 / 16.0 - 3.0)
        .collect();

    // Shared image: A's tile (descriptor form) then B's, each 1024-aligned.
    let a_tile = match v.a {
        ASrc::Desc { trans } => Some(Tile::new(64, v.ksteps, !trans, v.swizzle)),
        ASrc::Regs => None,
    };
    let b_tile = Tile::new(n, v.ksteps, !v.trans_b, v.swizzle);
    let b_base = a_tile
        .as_ref()
        .map_or(0, |t| t.bytes.next_multiple_of(SMEM_ALIGN));
    let total = (b_base + b_tile.bytes).next_multiple_of(16);
    let mut image = vec![0u8; total];
    let mut put = |off: usize, bits: u16| image[off..off + 2].copy_from_slice(&bits.to_le_bytes());
    if let Some(t) = &a_tile {
        for r in 0..64 {
            for k in 0..kt {
                put(t.offsets[r][k], a[r * kt + k].0);
            }
        }
    }
    for c in 0..n {
        for k in 0..kt {
            put(b_base + b_tile.offsets[c][k], b[k * n + c].0);
        }
    }

    // A's register fragments, k-step by k-step.
    let mut afrag = vec![0u32; 128 * 4 * v.ksteps];
    for tid in 0..128 {
        for s in 0..v.ksteps {
            for i in 0..4 {
                let (r, k) = a_position(tid, i);
                let lo = a[r * kt + 16 * s + k].0 as u32;
                let hi = a[r * kt + 16 * s + k + 1].0 as u32;
                afrag[tid * 4 * v.ksteps + 4 * s + i] = lo | (hi << 16);
            }
        }
    }

    // Reference: D = (scale-d ? D0 : 0) + (±A)(±B).
    let sign = if v.neg_a != v.neg_b { -1.0 } else { 1.0 };
    let mut reference = vec![0f64; 64 * n];
    for tid in 0..128 {
        for i in 0..n / 2 {
            let (r, c) = d_position(tid, i);
            let d0 = if v.scale_d.on() {
                f64::from(dinit[tid * n / 2 + i])
            } else {
                0.0
            };
            let dot: f64 = (0..kt).map(|k| a[r * kt + k].1 * b[k * n + c].1).sum();
            reference[r * n + c] = d0 + sign * dot;
        }
    }

    let ptx = kernel_ptx(v, total, a_tile.as_ref(), &b_tile, b_base);
    Case {
        ptx,
        image,
        afrag,
        dinit,
        reference,
    }
}

/// The PTX of a variant. Parameters: the shared image, A's fragments, the initial
/// accumulators, the output (N / 2 floats per thread) and the scale-d flag.
fn kernel_ptx(
    v: &Variant,
    total: usize,
    a_tile: Option<&Tile>,
    b_tile: &Tile,
    b_base: usize,
) -> String {
    let n = v.n;
    let nd = n / 2;
    let mut p = String::new();
    let mut line = |s: &str| {
        p.push_str(s);
        p.push('\n');
    };
    line(".version 8.0\n.target sm_90a\n.address_size 64\n");
    line(
        ".visible .entry wg(.param .u64 img, .param .u64 afrag, .param .u64 dinit, .param .u64 out, .param .u32 scale)",
    );
    line("{");
    line(&format!("  .reg .f32 %f<{nd}>;"));
    line(&format!("  .reg .b32 %a<{}>;", 4 * v.ksteps));
    line("  .reg .b32 %r<16>;\n  .reg .b64 %rd<16>;\n  .reg .pred %p<4>;");
    line(&format!("  .shared .align {SMEM_ALIGN} .b8 smem[{total}];"));
    line("  mov.u32 %r0, %tid.x;");
    // Copy the image, 16 bytes per thread per step.
    line("  ld.param.u64 %rd0, [img];\n  shl.b32 %r1, %r0, 4;");
    line("COPY:");
    line(&format!(
        "  setp.ge.u32 %p0, %r1, {total};\n  @%p0 bra COPIED;"
    ));
    line("  cvt.u64.u32 %rd1, %r1;\n  add.u64 %rd2, %rd0, %rd1;");
    line("  ld.global.v4.b32 {%r2, %r3, %r4, %r5}, [%rd2];");
    line("  mov.u32 %r6, smem;\n  add.u32 %r6, %r6, %r1;");
    line("  st.shared.v4.b32 [%r6], {%r2, %r3, %r4, %r5};");
    line("  add.u32 %r1, %r1, 2048;\n  bra COPY;");
    line("COPIED:");
    line("  bar.sync 0;\n  fence.proxy.async.shared::cta;");
    // A's fragments and the initial accumulators of this thread.
    line("  cvt.u64.u32 %rd3, %r0;");
    if v.a == ASrc::Regs {
        line("  ld.param.u64 %rd4, [afrag];");
        line(&format!("  mul.wide.u32 %rd5, %r0, {};", 16 * v.ksteps));
        line("  add.u64 %rd4, %rd4, %rd5;");
        for s in 0..v.ksteps {
            line(&format!(
                "  ld.global.v4.b32 {{%a{}, %a{}, %a{}, %a{}}}, [%rd4+{}];",
                4 * s,
                4 * s + 1,
                4 * s + 2,
                4 * s + 3,
                16 * s
            ));
        }
    }
    line("  ld.param.u64 %rd6, [dinit];");
    line(&format!("  mul.wide.u32 %rd7, %r0, {};", 4 * nd));
    line("  add.u64 %rd6, %rd6, %rd7;");
    for i in 0..nd {
        line(&format!("  ld.global.f32 %f{i}, [%rd6+{}];", 4 * i));
    }
    line("  ld.param.u32 %r7, [scale];\n  setp.ne.u32 %p1, %r7, 0;");
    // Descriptors: start address >> 4 (14 bits) or-ed with the constant fields.
    let desc = |reg: &str, base: usize, start: u32, high: u64| {
        format!(
            "  mov.u32 %r8, smem;\n  add.u32 %r8, %r8, {};\n  shr.u32 %r8, %r8, 4;\n  and.b32 %r8, %r8, 16383;\n  cvt.u64.u32 {reg}, %r8;\n  or.b64 {reg}, {reg}, {high};",
            base as u32 + start
        )
    };
    if v.plant != Some(Plant::NoFence) {
        line("  wgmma.fence.sync.aligned;");
    }
    if v.plant == Some(Plant::TouchAfterFence) {
        line("  mov.f32 %f0, 0f3F800000; // PLANT");
    }
    let dlist = (0..nd)
        .map(|i| format!("%f{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let ty = v.elem.name();
    for s in 0..v.ksteps {
        line(&desc(
            "%rd8",
            b_base,
            b_tile.starts[s],
            b_tile.desc_high(v.swizzle),
        ));
        let (a_op, trans_a) = match (v.a, a_tile) {
            (ASrc::Desc { trans }, Some(t)) => {
                line(&desc("%rd9", 0, t.starts[s], t.desc_high(v.swizzle)));
                ("%rd9".to_string(), format!("{}, ", trans as u8))
            }
            _ => (
                format!(
                    "{{%a{}, %a{}, %a{}, %a{}}}",
                    4 * s,
                    4 * s + 1,
                    4 * s + 2,
                    4 * s + 3
                ),
                String::new(),
            ),
        };
        // Only the first k-step may drop D; the others accumulate.
        let scale = match (s, v.scale_d) {
            (0, ScaleD::Imm(b)) => (b as u8).to_string(),
            (0, ScaleD::Pred(_)) => "%p1".to_string(),
            _ => "1".to_string(),
        };
        let sa = if v.neg_a { -1 } else { 1 };
        let sb = if v.neg_b { -1 } else { 1 };
        line(&format!(
            "  wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} {{{dlist}}}, {a_op}, %rd8, {scale}, {sa}, {sb}, {trans_a}{}; // MMA",
            v.trans_b as u8
        ));
    }
    line("  wgmma.commit_group.sync.aligned;");
    match v.plant {
        Some(Plant::ReadAccumulator) => line("  add.f32 %f1, %f1, %f1; // PLANT"),
        Some(Plant::WriteAccumulator) => line("  mov.f32 %f2, 0f00000000; // PLANT"),
        Some(Plant::OverwriteB) => line(&format!(
            "  mov.u32 %r9, smem;\n  setp.eq.u32 %p2, %r0, 0;\n  @%p2 st.shared.u32 [%r9+{b_base}], %r0; // PLANT"
        )),
        _ => {}
    }
    line("  wgmma.wait_group.sync.aligned 0;");
    line("  ld.param.u64 %rd10, [out];\n  add.u64 %rd10, %rd10, %rd7;");
    for i in 0..nd {
        line(&format!("  st.global.f32 [%rd10+{}], %f{i};", 4 * i));
    }
    line("  ret;\n}");
    p
}

/// Runs a variant; returns the launch's result and the kernel's output (N / 2 floats per
/// thread) and the case.
fn run(v: &Variant, seed: u64) -> (Result<jagged_emu::LaunchStats, EmuError>, Vec<f32>, Case) {
    let case = build(v, seed);
    let module =
        Module::parse(&case.ptx).unwrap_or_else(|e| panic!("{v:?}: parse: {e}\n{}", case.ptx));
    let mut dev = Device::new();
    let img = dev.upload(&case.image);
    let afrag_bytes: Vec<u8> = case.afrag.iter().flat_map(|x| x.to_le_bytes()).collect();
    let afrag = dev.upload(&afrag_bytes);
    let dinit = dev.upload(&f32_bytes(&case.dinit));
    let out_len = 128 * v.n / 2;
    let out = poisoned(&mut dev, out_len * 4);
    let config = LaunchConfig {
        grid: [1, 1, 1],
        block: [128, 1, 1],
        dynamic_shared_bytes: 0,
    };
    let args = [
        KernelArg::Ptr(img),
        KernelArg::Ptr(afrag),
        KernelArg::Ptr(dinit),
        KernelArg::Ptr(out),
        KernelArg::U32(v.scale_d.on() as u32),
    ];
    let result = dev.launch(&module, "wg", &config, &args);
    let values = f32s(&dev.read(out, out_len * 4).expect("read back"));
    (result, values, case)
}

/// Runs a clean variant and checks D against the f64 reference.
fn check(v: Variant, seed: u64) {
    let (result, values, case) = run(&v, seed);
    if let Err(e) = result {
        panic!("{v:?}: launch: {e}\n{}", case.ptx);
    }
    let n = v.n;
    let mut d = vec![f32::NAN; 64 * n];
    for tid in 0..128 {
        for i in 0..n / 2 {
            let (r, c) = d_position(tid, i);
            d[r * n + c] = values[tid * n / 2 + i];
        }
    }
    let err = rel_err(&d, &case.reference);
    assert!(err <= 1e-6, "{v:?}: relative error {err}");
}

#[test]
fn every_swizzle_mode_and_transpose_matches_the_reference() {
    let mut seed = 1;
    for swizzle in [0, 32, 64, 128] {
        for trans_b in [false, true] {
            for a in [
                ASrc::Regs,
                ASrc::Desc { trans: false },
                ASrc::Desc { trans: true },
            ] {
                seed += 1;
                let elem = if seed % 2 == 0 { Elem::F16 } else { Elem::Bf16 };
                check(Variant::new(elem, 64, a, swizzle, trans_b), seed);
            }
        }
    }
}

#[test]
fn n_8_and_256_in_both_types() {
    for (i, elem) in [Elem::F16, Elem::Bf16].into_iter().enumerate() {
        for n in [8, 256] {
            for (j, a) in [ASrc::Regs, ASrc::Desc { trans: false }]
                .into_iter()
                .enumerate()
            {
                let swizzle = [0, 128][j];
                check(
                    Variant::new(elem, n, a, swizzle, false),
                    100 + (i * 4 + j) as u64 + n as u64,
                );
            }
        }
    }
    // An N-major B of 256 columns in 64-byte rows, and N = 8 with 32-byte rows.
    check(
        Variant::new(Elem::Bf16, 256, ASrc::Desc { trans: true }, 64, true),
        7,
    );
    check(
        Variant::new(Elem::F16, 8, ASrc::Desc { trans: false }, 32, false),
        8,
    );
}

#[test]
fn scale_d_imm_scale_and_chained_k_steps() {
    let base = Variant::new(Elem::F16, 64, ASrc::Desc { trans: false }, 128, false);
    for scale_d in [
        ScaleD::Imm(false),
        ScaleD::Imm(true),
        ScaleD::Pred(false),
        ScaleD::Pred(true),
    ] {
        check(Variant { scale_d, ..base }, 20);
    }
    check(
        Variant {
            neg_a: true,
            ..base
        },
        21,
    );
    check(
        Variant {
            neg_b: true,
            elem: Elem::Bf16,
            a: ASrc::Regs,
            ..base
        },
        22,
    );
    check(
        Variant {
            neg_a: true,
            neg_b: true,
            ..base
        },
        23,
    );
    // K = 32 as two chained mma_asyncs; with 128-byte rows the second k-step starts 32
    // bytes into each swizzled row.
    for (swizzle, a, trans_b) in [
        (128, ASrc::Desc { trans: false }, false),
        (64, ASrc::Regs, true),
        (32, ASrc::Desc { trans: true }, false),
        (0, ASrc::Desc { trans: true }, true),
    ] {
        check(
            Variant {
                ksteps: 2,
                scale_d: ScaleD::Pred(true),
                ..Variant::new(Elem::Bf16, 128, a, swizzle, trans_b)
            },
            30 + swizzle as u64,
        );
    }
}

/// The findings of a planted variant, which must fail the memory check.
fn planted_reports(plant: Plant, a: ASrc) -> (Vec<CheckReport>, String) {
    let v = Variant {
        plant: Some(plant),
        ..Variant::new(Elem::F16, 16, a, 128, false)
    };
    let (result, _, case) = run(&v, 40);
    match result {
        Err(EmuError::MemoryCheck(r)) => (r, case.ptx),
        Err(e) => panic!("{plant:?}: expected a memory-check failure, got: {e}"),
        Ok(_) => panic!("{plant:?}: the planted bug was not reported\n{}", case.ptx),
    }
}

fn line_of(ptx: &str, needle: &str) -> u32 {
    ptx.lines()
        .position(|l| l.contains(needle))
        .map_or(0, |i| i as u32 + 1)
}

#[test]
fn the_clean_planted_kernel_passes() {
    for a in [ASrc::Regs, ASrc::Desc { trans: false }] {
        check(Variant::new(Elem::F16, 16, a, 128, false), 40);
    }
}

#[test]
fn accumulator_access_before_wait_group_is_reported() {
    for plant in [Plant::ReadAccumulator, Plant::WriteAccumulator] {
        let (r, ptx) = planted_reports(plant, ASrc::Regs);
        let line = line_of(&ptx, "// PLANT");
        assert!(
            r.iter()
                .all(|r| r.kind == CheckKind::WgmmaRegisterInFlight && r.line == line),
            "{plant:?}: {r:?}"
        );
        assert_eq!(r[0].write, plant == Plant::WriteAccumulator, "{r:?}");
        assert!(
            r[0].detail
                .contains(&format!("line {}", line_of(&ptx, "// MMA"))),
            "{r:?}"
        );
    }
}

#[test]
fn shared_operand_overwrite_before_wait_group_is_reported() {
    let (r, ptx) = planted_reports(Plant::OverwriteB, ASrc::Desc { trans: false });
    let line = line_of(&ptx, "// PLANT");
    // The retiring warps' reads race with the store too (another warp wrote the bytes
    // since the last barrier); the overwrite itself is the finding at the store.
    assert!(
        r.iter()
            .any(|r| r.kind == CheckKind::WgmmaOperandOverwrite && r.line == line && r.write),
        "{r:?}"
    );
    assert!(
        r.iter().all(|r| r.kind == CheckKind::WgmmaOperandOverwrite
            || (r.kind == CheckKind::SharedRace && r.line == line_of(&ptx, "// MMA"))),
        "{r:?}"
    );
}

#[test]
fn wgmma_without_fence_is_reported() {
    for plant in [Plant::NoFence, Plant::TouchAfterFence] {
        let (r, ptx) = planted_reports(plant, ASrc::Desc { trans: false });
        let mma = line_of(&ptx, "// MMA");
        assert!(
            r.iter()
                .all(|r| r.kind == CheckKind::WgmmaMissingFence && r.line == mma),
            "{plant:?}: {r:?}"
        );
        assert!(!r.is_empty());
    }
}

#[test]
fn partial_warpgroup_and_unsupported_forms_are_errors() {
    // A block of 64 threads has no full warpgroup.
    let case = build(&Variant::new(Elem::F16, 8, ASrc::Regs, 0, false), 50);
    let module = Module::parse(&case.ptx).expect("parse");
    let mut dev = Device::new();
    let buf = dev.alloc(1 << 16);
    let config = LaunchConfig {
        grid: [1, 1, 1],
        block: [64, 1, 1],
        dynamic_shared_bytes: 0,
    };
    let args = [
        KernelArg::Ptr(buf),
        KernelArg::Ptr(buf),
        KernelArg::Ptr(buf),
        KernelArg::Ptr(buf),
        KernelArg::U32(1),
    ];
    match dev.launch(&module, "wg", &config, &args) {
        Err(EmuError::Runtime { message, .. }) => {
            assert!(message.contains("warpgroup"), "{message}")
        }
        other => panic!("expected a runtime error, got {other:?}"),
    }
    // Warp 3 of the warpgroup skips the mma_async (its guard is false in all its lanes).
    let skipping = case.ptx.replace(
        "  wgmma.mma_async",
        "  setp.ge.u32 %p3, %r0, 96;\n  @!%p3 wgmma.mma_async",
    );
    let module = Module::parse(&skipping).expect("parse");
    let config = LaunchConfig {
        block: [128, 1, 1],
        ..config
    };
    match dev.launch(&module, "wg", &config, &args) {
        Err(EmuError::Runtime { message, line, .. }) => {
            assert!(message.contains("different wgmma.mma_async"), "{message}");
            assert_eq!(line, line_of(&skipping, "// MMA"));
        }
        other => panic!("expected a runtime error, got {other:?}"),
    }
    // f16 accumulators, sparse wgmma and a shape that is not m64nNk16 are refused at parse.
    for (from, to) in [
        (".f32.f16.f16", ".f16.f16.f16"),
        ("wgmma.mma_async.sync", "wgmma.mma_async.sp.sync"),
        ("m64n8k16", "m64n12k16"),
    ] {
        let ptx = case.ptx.replace(from, to);
        match Module::parse(&ptx) {
            Err(EmuError::Unsupported { what, .. }) => {
                assert!(what.contains("wgmma") || what.contains(".sp"), "{what}")
            }
            other => panic!("{to}: expected Unsupported, got {other:?}"),
        }
    }
}

#[test]
fn the_cost_model_counts_wgmma_in_its_own_class() {
    let v = Variant {
        ksteps: 2,
        ..Variant::new(Elem::F16, 64, ASrc::Regs, 128, false)
    };
    let (result, _, case) = run(&v, 60);
    let p = result
        .unwrap_or_else(|e| panic!("{e}\n{}", case.ptx))
        .profile;
    // Two mma_asyncs, run by each of the 4 warps; no mma.sync.
    assert_eq!((p.wgmma, p.mma), (8, 0), "{p}");
    assert!(p.to_string().contains("wgmma"), "{p}");
}

// ---------------------------------------------------------------- Triton's wgmma PTX

/// A Triton matmul compiled for sm_90a (`emulator/fixtures/wgmma_*`, made by
/// gen_triton.py): C (f32, m x n) = A B for one tile, K a multiple of `k_step`.
struct TritonMatmul {
    name: &'static str,
    elem: Elem,
    m: usize,
    n: usize,
    /// B is stored [n, K] row-major (K-major in shared memory), else [K, n].
    b_nk: bool,
}

const TRITON: [TritonMatmul; 3] = [
    // 3-stage cp.async pipeline, wgmma.wait_group 1 in the loop, N-major B.
    TritonMatmul {
        name: "wgmma_matmul_bf16",
        elem: Elem::Bf16,
        m: 64,
        n: 64,
        b_nk: false,
    },
    TritonMatmul {
        name: "wgmma_matmul_f16_nk",
        elem: Elem::F16,
        m: 64,
        n: 128,
        b_nk: true,
    },
    // Two warpgroups, m64n256k16.
    TritonMatmul {
        name: "wgmma_matmul_f16_wide",
        elem: Elem::F16,
        m: 128,
        n: 256,
        b_nk: false,
    },
];

/// Runs a Triton fixture's PTX (possibly edited) with K = `k`; returns the launch's
/// result and the relative error of C against the f64 reference.
fn run_triton(
    t: &TritonMatmul,
    ptx: &str,
    k: usize,
) -> (Result<jagged_emu::LaunchStats, EmuError>, f64) {
    let fx = triton_support::Fixture::load(t.name);
    let module = fx.module(ptx);
    let mut rng = Rng::new(0x5eed ^ k as u64);
    let mut values = |count: usize| -> Vec<(u16, f64)> {
        (0..count)
            .map(|_| t.elem.round(rng.uniform(-1.0, 1.0)))
            .collect()
    };
    let (a, b) = (values(t.m * k), values(k * t.n)); // row-major A [m, K], B [K, n]
    let stored_b: Vec<(u16, f64)> = if t.b_nk {
        (0..t.n)
            .flat_map(|j| (0..k).map(move |kk| (j, kk)))
            .map(|(j, kk)| b[kk * t.n + j])
            .collect()
    } else {
        b.clone()
    };
    let bytes =
        |v: &[(u16, f64)]| -> Vec<u8> { v.iter().flat_map(|x| x.0.to_le_bytes()).collect() };
    let mut dev = Device::new();
    let pa = dev.upload(&bytes(&a));
    let pb = dev.upload(&bytes(&stored_b));
    let pc = poisoned(&mut dev, t.m * t.n * 4);
    let args = fx.args(vec![
        KernelArg::Ptr(pa),
        KernelArg::Ptr(pb),
        KernelArg::Ptr(pc),
        KernelArg::I32(k as i32),
    ]);
    let result = dev.launch(&module, &fx.kernel, &fx.config([1, 1, 1]), &args);
    let c = f32s(&dev.read(pc, t.m * t.n * 4).expect("read back"));
    let mut reference = vec![0f64; t.m * t.n];
    for i in 0..t.m {
        for j in 0..t.n {
            reference[i * t.n + j] = (0..k).map(|kk| a[i * k + kk].1 * b[kk * t.n + j].1).sum();
        }
    }
    (result, rel_err(&c, &reference))
}

#[test]
fn triton_wgmma_matmuls_match_the_reference() {
    for t in &TRITON {
        let ptx = triton_support::Fixture::load(t.name).ptx;
        for k in [64, 256] {
            let (result, err) = run_triton(t, &ptx, k);
            let stats = result.unwrap_or_else(|e| panic!("{} (K = {k}): {e}", t.name));
            assert!(
                stats.warnings.is_empty(),
                "{}: {:?}",
                t.name,
                stats.warnings
            );
            assert!(err <= 1e-6, "{} (K = {k}): relative error {err}", t.name);
            // Each warp runs K / 16 mma_asyncs.
            let warps = (t.m / 16) as u64;
            assert_eq!(stats.profile.wgmma, warps * k as u64 / 16, "{}", t.name);
        }
    }
}

/// `ptx` with the `n`-th line containing `pattern` replaced by `with`; and that line's
/// 1-based number.
fn edit_line(ptx: &str, pattern: &str, n: usize, with: &str) -> (String, u32) {
    let index = ptx
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(pattern))
        .nth(n)
        .unwrap_or_else(|| panic!("no {n}-th line containing `{pattern}`"))
        .0;
    let mut lines: Vec<&str> = ptx.lines().collect();
    lines[index] = with;
    (lines.join("\n") + "\n", index as u32 + 1)
}

/// The findings of an edited Triton fixture, which must fail the memory check.
fn triton_reports(t: &TritonMatmul, ptx: &str) -> Vec<CheckReport> {
    match run_triton(t, ptx, 256).0 {
        Err(EmuError::MemoryCheck(r)) => r,
        Err(e) => panic!("{}: expected a memory-check failure, got: {e}", t.name),
        Ok(_) => panic!("{}: the planted bug was not reported", t.name),
    }
}

#[test]
fn triton_planted_wgmma_bugs_are_reported() {
    let t = &TRITON[0];
    let ptx = triton_support::Fixture::load(t.name).ptx;
    let mma = ptx
        .lines()
        .position(|l| l.contains("wgmma.mma_async"))
        .map_or(0, |i| i as u32 + 1);

    // The epilogue stores the accumulators to shared memory (for the output layout) with
    // no wait_group 0 before it: it reads registers in flight and overwrites the tiles
    // the last mma_asyncs read.
    let (edited, _) = edit_line(&ptx, "wgmma.wait_group.sync.aligned 0", 0, "");
    let r = triton_reports(t, &edited);
    assert!(
        r.iter()
            .any(|r| r.kind == CheckKind::WgmmaRegisterInFlight && !r.write),
        "{r:?}"
    );
    assert!(
        r.iter().all(|r| matches!(
            r.kind,
            CheckKind::WgmmaRegisterInFlight | CheckKind::WgmmaOperandOverwrite
        ) && r.line > mma),
        "{r:?}"
    );

    // The loop keeps two groups in flight: the next stage's cp.async refills the tile
    // the older one still reads.
    let (edited, _) = edit_line(
        &ptx,
        "wgmma.wait_group.sync.aligned 1",
        0,
        "\twgmma.wait_group.sync.aligned 2;",
    );
    let r = triton_reports(t, &edited);
    let copies: Vec<u32> = ptx
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("cp.async.cg.shared.global"))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    // Every refill in the loop is reported; the mma_asyncs that then read refilled or
    // still pending tiles are reported as races and pending-copy reads.
    let loop_copies: Vec<u32> = copies.iter().copied().filter(|&l| l > mma).collect();
    assert!(!loop_copies.is_empty());
    for line in &loop_copies {
        assert!(
            r.iter()
                .any(|r| r.kind == CheckKind::WgmmaOperandOverwrite && r.line == *line),
            "cp.async at line {line}: {r:?}"
        );
    }
    assert!(
        r.iter().all(|r| match r.kind {
            CheckKind::WgmmaOperandOverwrite | CheckKind::SharedRace =>
                copies.contains(&r.line) || r.line >= mma && r.line < loop_copies[0],
            CheckKind::PendingAsyncCopyRead => r.line >= mma && r.line < loop_copies[0],
            _ => false,
        }),
        "{r:?}"
    );

    // No wgmma.fence before the loop's mma_asyncs.
    let (edited, _) = edit_line(&ptx, "wgmma.fence.sync.aligned", 0, "");
    let r = triton_reports(t, &edited);
    assert!(
        r.iter()
            .all(|r| r.kind == CheckKind::WgmmaMissingFence && r.line == mma),
        "{r:?}"
    );
}

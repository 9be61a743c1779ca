//! Warp-collective conformance: hand-written PTX kernels run `mma.sync`, `ldmatrix`,
//! `shfl.sync` and `vote.sync`, and every lane stores what it received. The expected
//! per-lane values are derived here from the PTX ISA's definitions (the fragment
//! layout formulas of "Matrix Fragments for mma.m16n8k8 / m16n8k16", the ldmatrix
//! description, the shfl.sync pseudo-code), independently of the emulator.

use jagged_emu::{Device, DevicePtr, KernelArg, LaunchConfig, Module};

const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n\n";

fn u32_bytes(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Parses `ptx`, launches its kernel `kernel` as one CTA of `threads` threads, and
/// panics with the emulator's message on any error.
fn launch_one_cta(dev: &mut Device, ptx: &str, kernel: &str, threads: u32, args: &[KernelArg]) {
    let module = Module::parse(ptx).unwrap_or_else(|e| panic!("{kernel}: parse: {e}\n{ptx}"));
    let config = LaunchConfig {
        grid: [1, 1, 1],
        block: [threads, 1, 1],
        dynamic_shared_bytes: 0,
    };
    if let Err(e) = dev.launch(&module, kernel, &config, args) {
        panic!("{kernel}: launch: {e}");
    }
}

fn read_u32s(dev: &Device, ptr: DevicePtr, n: usize) -> Vec<u32> {
    u32s(&dev.read(ptr, n * 4).expect("read back"))
}

/// A buffer of `n` words of 0xFFFFFFFF, so a lane that stores nothing fails.
fn poisoned_words(dev: &mut Device, n: usize) -> DevicePtr {
    dev.upload(&vec![0xFF; n * 4])
}

// ---------------------------------------------------------------- mma.sync

/// The operand element types of the mma variants under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum MmaType {
    Bf16,
    F16,
    Tf32,
}

/// One `mma.sync` variant: shape, input type, accumulator type.
#[derive(Clone, Copy, Debug)]
struct Mma {
    /// K of the m16n8k shape (8 or 16).
    k: usize,
    ty: MmaType,
    /// f16 accumulators (`.f16.f16.f16.f16`) instead of f32.
    f16_acc: bool,
}

impl Mma {
    fn instruction(&self) -> String {
        let ab = match self.ty {
            MmaType::Bf16 => "bf16",
            MmaType::F16 => "f16",
            MmaType::Tf32 => "tf32",
        };
        let acc = if self.f16_acc { "f16" } else { "f32" };
        format!(
            "mma.sync.aligned.m16n8k{}.row.col.{acc}.{ab}.{ab}.{acc}",
            self.k
        )
    }

    /// Elements of A (16 x K) and B (K x 8) each lane holds.
    fn a_elems(&self) -> usize {
        16 * self.k / 32
    }
    fn b_elems(&self) -> usize {
        8 * self.k / 32
    }

    /// Elements per 32-bit register: two 16-bit values, or one tf32.
    fn per_reg(&self) -> usize {
        if self.ty == MmaType::Tf32 { 1 } else { 2 }
    }

    /// (row, col) of A element `i` of `lane`, from the ISA's fragment formulas.
    fn a_coord(&self, lane: usize, i: usize) -> (usize, usize) {
        let (group, tig) = (lane >> 2, lane % 4);
        match (self.ty, self.k) {
            // m16n8k16 .f16/.bf16: row = groupID for a0,a1,a4,a5 else groupID + 8;
            // col = tig*2 + (i & 1), plus 8 for i >= 4.
            (MmaType::Bf16 | MmaType::F16, 16) => (
                group + 8 * ((i >> 1) & 1),
                tig * 2 + (i & 1) + if i >= 4 { 8 } else { 0 },
            ),
            // m16n8k8 .f16/.bf16: row = groupID for a0,a1 else groupID + 8;
            // col = tig*2 + (i & 1).
            (MmaType::Bf16 | MmaType::F16, 8) => {
                (group + if i >= 2 { 8 } else { 0 }, tig * 2 + (i & 1))
            }
            // m16n8k8 .tf32: row = groupID for a0,a2 else groupID + 8;
            // col = tig for a0,a1 else tig + 4.
            (MmaType::Tf32, 8) => (group + 8 * (i & 1), tig + if i >= 2 { 4 } else { 0 }),
            other => unreachable!("no such mma variant in this test: {other:?}"),
        }
    }

    /// (row k, col n) of B element `i` of `lane`.
    fn b_coord(&self, lane: usize, i: usize) -> (usize, usize) {
        let (group, tig) = (lane >> 2, lane % 4);
        match (self.ty, self.k) {
            // m16n8k16: row = tig*2 + (i & 1), plus 8 for i >= 2; col = groupID.
            (MmaType::Bf16 | MmaType::F16, 16) => {
                (tig * 2 + (i & 1) + if i >= 2 { 8 } else { 0 }, group)
            }
            // m16n8k8 .f16/.bf16: row = tig*2 + i; col = groupID.
            (MmaType::Bf16 | MmaType::F16, 8) => (tig * 2 + i, group),
            // m16n8k8 .tf32: row = tig for b0, tig + 4 for b1; col = groupID.
            (MmaType::Tf32, 8) => (tig + 4 * i, group),
            other => unreachable!("no such mma variant in this test: {other:?}"),
        }
    }

    /// Encodes an exactly representable value in the input type.
    fn encode(&self, v: f32) -> u32 {
        match self.ty {
            MmaType::Bf16 => u32::from(half::bf16::from_f32(v).to_bits()),
            MmaType::F16 => u32::from(half::f16::from_f32(v).to_bits()),
            MmaType::Tf32 => v.to_bits(),
        }
    }

    /// The kernel: each lane loads its A, B, C registers from per-lane arrays
    /// (register order), runs the mma and stores its D registers.
    fn kernel(&self) -> String {
        let a_regs = self.a_elems() / self.per_reg();
        let b_regs = self.b_elems() / self.per_reg();
        // f32 accumulators: 4 registers; f16: 2 registers of f16x2.
        let c_regs = if self.f16_acc { 2 } else { 4 };
        let c_ty = if self.f16_acc { "b32" } else { "f32" };
        let list = |prefix: &str, n: usize| {
            (0..n)
                .map(|i| format!("%{prefix}{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let loads = |prefix: &str, ty: &str, n: usize, addr: &str| {
            (0..n)
                .map(|i| format!("    ld.global.{ty} %{prefix}{i}, [{addr}+{}];\n", 4 * i))
                .collect::<String>()
        };
        let stores = (0..c_regs)
            .map(|i| format!("    st.global.{c_ty} [%rd11+{}], %d{i};\n", 4 * i))
            .collect::<String>();
        format!(
            "{HEADER}.visible .entry mma_test(\n    .param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd)\n{{\n\
             \x20   .reg .b32 %a<{a_regs}>;\n    .reg .b32 %b<{b_regs}>;\n    .reg .{c_ty} %c<{c_regs}>;\n    .reg .{c_ty} %d<{c_regs}>;\n\
             \x20   .reg .b32 %lane;\n    .reg .b64 %rd<12>;\n\
             \x20   ld.param.u64 %rd0, [pa];\n    ld.param.u64 %rd1, [pb];\n    ld.param.u64 %rd2, [pc];\n    ld.param.u64 %rd3, [pd];\n\
             \x20   mov.u32 %lane, %tid.x;\n\
             \x20   mul.wide.u32 %rd4, %lane, {a_bytes};\n    add.s64 %rd5, %rd0, %rd4;\n{a_loads}\
             \x20   mul.wide.u32 %rd6, %lane, {b_bytes};\n    add.s64 %rd7, %rd1, %rd6;\n{b_loads}\
             \x20   mul.wide.u32 %rd8, %lane, {c_bytes};\n    add.s64 %rd9, %rd2, %rd8;\n{c_loads}\
             \x20   add.s64 %rd11, %rd3, %rd8;\n\
             \x20   {ins} {{{d}}}, {{{a}}}, {{{b}}}, {{{c}}};\n{stores}    ret;\n}}\n",
            a_bytes = 4 * a_regs,
            b_bytes = 4 * b_regs,
            c_bytes = 4 * c_regs,
            a_loads = loads("a", "b32", a_regs, "%rd5"),
            b_loads = loads("b", "b32", b_regs, "%rd7"),
            c_loads = loads("c", c_ty, c_regs, "%rd9"),
            ins = self.instruction(),
            d = list("d", c_regs),
            a = list("a", a_regs),
            b = list("b", b_regs),
            c = list("c", c_regs),
        )
    }

    /// Packs per-lane elements (in fragment order) into 32-bit registers.
    fn pack(&self, elems: &[u32]) -> Vec<u32> {
        if self.per_reg() == 1 {
            elems.to_vec()
        } else {
            elems.chunks(2).map(|p| p[0] | (p[1] << 16)).collect()
        }
    }

    /// Runs D = A B + C on small random integers (exact in every type, so the result
    /// must match exactly) and checks every lane's D fragment.
    fn check(&self, seed: u64) {
        let k = self.k;
        let mut state = seed;
        let mut small = |range: i32| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % (2 * range as u64 + 1)) as i32 - range
        };
        let a: Vec<f32> = (0..16 * k).map(|_| small(3) as f32).collect(); // row-major 16 x k
        let b: Vec<f32> = (0..k * 8).map(|_| small(3) as f32).collect(); // row-major k x 8
        let c: Vec<f32> = (0..16 * 8).map(|_| small(8) as f32).collect(); // row-major 16 x 8
        let d: Vec<f32> = (0..16 * 8)
            .map(|rc| {
                let (r, col) = (rc / 8, rc % 8);
                (0..k).map(|p| a[r * k + p] * b[p * 8 + col]).sum::<f32>() + c[rc]
            })
            .collect();
        // C/D layout: row = groupID for c0,c1 else groupID + 8; col = tig*2 + (i & 1).
        let c_coord = |lane: usize, i: usize| {
            (
                (lane >> 2) + if i >= 2 { 8 } else { 0 },
                (lane % 4) * 2 + (i & 1),
            )
        };
        let mut a_frag = Vec::new();
        let mut b_frag = Vec::new();
        let mut c_frag = Vec::new();
        for lane in 0..32 {
            let elems: Vec<u32> = (0..self.a_elems())
                .map(|i| {
                    let (r, col) = self.a_coord(lane, i);
                    self.encode(a[r * k + col])
                })
                .collect();
            a_frag.extend(self.pack(&elems));
            let elems: Vec<u32> = (0..self.b_elems())
                .map(|i| {
                    let (row, col) = self.b_coord(lane, i);
                    self.encode(b[row * 8 + col])
                })
                .collect();
            b_frag.extend(self.pack(&elems));
            for i in 0..4 {
                let (r, col) = c_coord(lane, i);
                c_frag.push(c[r * 8 + col]);
            }
        }
        let c_words: Vec<u32> = if self.f16_acc {
            c_frag
                .chunks(2)
                .map(|p| {
                    u32::from(half::f16::from_f32(p[0]).to_bits())
                        | (u32::from(half::f16::from_f32(p[1]).to_bits()) << 16)
                })
                .collect()
        } else {
            c_frag.iter().map(|v| v.to_bits()).collect()
        };
        let mut dev = Device::new();
        let pa = dev.upload(&u32_bytes(&a_frag));
        let pb = dev.upload(&u32_bytes(&b_frag));
        let pc = dev.upload(&u32_bytes(&c_words));
        let pd = poisoned_words(&mut dev, c_words.len());
        launch_one_cta(
            &mut dev,
            &self.kernel(),
            "mma_test",
            32,
            &[
                KernelArg::Ptr(pa),
                KernelArg::Ptr(pb),
                KernelArg::Ptr(pc),
                KernelArg::Ptr(pd),
            ],
        );
        let out = read_u32s(&dev, pd, c_words.len());
        let got: Vec<f32> = if self.f16_acc {
            out.iter()
                .flat_map(|w| {
                    [w & 0xffff, w >> 16].map(|h| half::f16::from_bits(h as u16).to_f32())
                })
                .collect()
        } else {
            out.iter().map(|&w| f32::from_bits(w)).collect()
        };
        for lane in 0..32 {
            for i in 0..4 {
                let (r, col) = c_coord(lane, i);
                assert_eq!(
                    got[lane * 4 + i],
                    d[r * 8 + col],
                    "{}: lane {lane} d{i} should be D[{r}][{col}]",
                    self.instruction()
                );
            }
        }
    }
}

#[test]
fn mma_m16n8k16_bf16_f32_fragments() {
    Mma {
        k: 16,
        ty: MmaType::Bf16,
        f16_acc: false,
    }
    .check(11);
}

#[test]
fn mma_m16n8k16_f16_f32_fragments() {
    Mma {
        k: 16,
        ty: MmaType::F16,
        f16_acc: false,
    }
    .check(12);
}

#[test]
fn mma_m16n8k16_f16_f16_fragments() {
    Mma {
        k: 16,
        ty: MmaType::F16,
        f16_acc: true,
    }
    .check(13);
}

#[test]
fn mma_m16n8k8_bf16_f32_fragments() {
    Mma {
        k: 8,
        ty: MmaType::Bf16,
        f16_acc: false,
    }
    .check(14);
}

#[test]
fn mma_m16n8k8_f16_f32_fragments() {
    Mma {
        k: 8,
        ty: MmaType::F16,
        f16_acc: false,
    }
    .check(15);
}

#[test]
fn mma_m16n8k8_tf32_f32_fragments() {
    Mma {
        k: 8,
        ty: MmaType::Tf32,
        f16_acc: false,
    }
    .check(16);
}

// ---------------------------------------------------------------- ldmatrix

/// Bytes of the shared buffer the ldmatrix kernel fills: 32 lanes x 64 bytes.
const LDM_SHARED: usize = 2048;

/// The 16-bit value stored at half-word `h` of the shared buffer: distinct for every h.
fn ldm_value(h: usize) -> u32 {
    ((h * 7919 + 13) & 0xffff) as u32
}

/// Byte offset of the row whose address lane `lane` supplies: 16-byte rows picked by a
/// permutation, so rows are neither contiguous nor in lane order.
fn ldm_row_offset(lane: usize) -> usize {
    ((lane * 5 + 3) % (LDM_SHARED / 16)) * 16
}

fn ldmatrix_kernel(num: usize, trans: bool) -> String {
    let regs = (0..num)
        .map(|j| format!("%v{j}"))
        .collect::<Vec<_>>()
        .join(", ");
    let stores = (0..num)
        .map(|j| format!("    st.global.b32 [%rd9+{}], %v{j};\n", 4 * j))
        .collect::<String>();
    let copies = (0..4)
        .map(|i| {
            format!(
                "    ld.global.v4.b32 {{%r4, %r5, %r6, %r7}}, [%rd5+{o}];\n    st.shared.v4.b32 [%r3+{o}], {{%r4, %r5, %r6, %r7}};\n",
                o = 16 * i
            )
        })
        .collect::<String>();
    format!(
        "{HEADER}.shared .align 16 .b8 smem[{LDM_SHARED}];\n\n\
         .visible .entry ldm_test(.param .u64 pin, .param .u64 paddr, .param .u64 pout)\n{{\n\
         \x20   .reg .b32 %r<12>;\n    .reg .b32 %v<4>;\n    .reg .b64 %rd<12>;\n\
         \x20   ld.param.u64 %rd0, [pin];\n    ld.param.u64 %rd1, [paddr];\n    ld.param.u64 %rd2, [pout];\n\
         \x20   mov.u32 %r0, %tid.x;\n\
         \x20   mul.wide.u32 %rd4, %r0, 64;\n    add.s64 %rd5, %rd0, %rd4;\n\
         \x20   mov.u32 %r1, smem;\n    shl.b32 %r2, %r0, 6;\n    add.u32 %r3, %r1, %r2;\n{copies}\
         \x20   bar.sync 0;\n\
         \x20   mul.wide.u32 %rd6, %r0, 4;\n    add.s64 %rd7, %rd1, %rd6;\n    ld.global.u32 %r8, [%rd7];\n    add.u32 %r9, %r1, %r8;\n\
         \x20   ldmatrix.sync.aligned.m8n8.x{num}{t}.shared.b16 {{{regs}}}, [%r9];\n\
         \x20   mul.wide.u32 %rd8, %r0, {out_bytes};\n    add.s64 %rd9, %rd2, %rd8;\n{stores}\
         \x20   ret;\n}}\n",
        t = if trans { ".trans" } else { "" },
        out_bytes = 4 * num,
    )
}

fn check_ldmatrix(num: usize, trans: bool) {
    let input: Vec<u8> = (0..LDM_SHARED / 2)
        .flat_map(|h| (ldm_value(h) as u16).to_le_bytes())
        .collect();
    // Lanes 0..8*num supply the row addresses of matrices 0..num (8 rows each). The
    // other lanes' addresses are unused on sm_80 and point far outside shared memory:
    // touching them is a checker error.
    let addrs: Vec<u32> = (0..32)
        .map(|lane| {
            if lane < 8 * num {
                ldm_row_offset(lane) as u32
            } else {
                0x10_0000
            }
        })
        .collect();
    let mut dev = Device::new();
    let pin = dev.upload(&input);
    let paddr = dev.upload(&u32_bytes(&addrs));
    let pout = poisoned_words(&mut dev, 32 * num);
    launch_one_cta(
        &mut dev,
        &ldmatrix_kernel(num, trans),
        "ldm_test",
        32,
        &[
            KernelArg::Ptr(pin),
            KernelArg::Ptr(paddr),
            KernelArg::Ptr(pout),
        ],
    );
    let out = read_u32s(&dev, pout, 32 * num);
    for lane in 0..32 {
        for j in 0..num {
            // Register j of each lane holds two elements of matrix j. Without .trans:
            // row lane/4, columns 2*(lane%4) and +1. With .trans the matrix is read
            // column-major: rows 2*(lane%4) and +1, column lane/4.
            let expected: Vec<u32> = (0..2)
                .map(|half| {
                    let (row, col) = if trans {
                        (2 * (lane % 4) + half, lane / 4)
                    } else {
                        (lane / 4, 2 * (lane % 4) + half)
                    };
                    ldm_value((ldm_row_offset(8 * j + row) + 2 * col) / 2)
                })
                .collect();
            let want = expected[0] | (expected[1] << 16);
            assert_eq!(
                out[lane * num + j],
                want,
                "ldmatrix .x{num}{} lane {lane} register {j}: got {:#010x}, want {want:#010x}",
                if trans { ".trans" } else { "" },
                out[lane * num + j]
            );
        }
    }
}

#[test]
fn ldmatrix_x1() {
    check_ldmatrix(1, false);
}

#[test]
fn ldmatrix_x2() {
    check_ldmatrix(2, false);
}

#[test]
fn ldmatrix_x4() {
    check_ldmatrix(4, false);
}

#[test]
fn ldmatrix_x1_trans() {
    check_ldmatrix(1, true);
}

#[test]
fn ldmatrix_x2_trans() {
    check_ldmatrix(2, true);
}

#[test]
fn ldmatrix_x4_trans() {
    check_ldmatrix(4, true);
}

// ---------------------------------------------------------------- shfl.sync

/// The source lane and the predicate of `shfl.sync.MODE` for `lane`, following the
/// ISA's pseudo-code: c[4:0] is the clamp value, c[12:8] the segment mask.
fn shfl_model(mode: &str, lane: i32, b: u32, c: u32) -> (i32, bool) {
    let bval = (b & 31) as i32;
    let cval = (c & 31) as i32;
    let segmask = ((c >> 8) & 31) as i32;
    let max_lane = (lane & segmask) | (cval & !segmask);
    let min_lane = lane & segmask;
    let (j, pval) = match mode {
        "up" => (lane - bval, lane - bval >= max_lane),
        "down" => (lane + bval, lane + bval <= max_lane),
        "bfly" => (lane ^ bval, (lane ^ bval) <= max_lane),
        "idx" => {
            let j = min_lane | (bval & !segmask);
            (j, j <= max_lane)
        }
        other => unreachable!("no shfl mode {other}"),
    };
    (if pval { j } else { lane }, pval)
}

fn shfl_kernel(mode: &str) -> String {
    format!(
        "{HEADER}.visible .entry shfl_test(.param .u64 pin, .param .u64 pout, .param .u64 ppred, .param .u32 pb, .param .u32 pc)\n{{\n\
         \x20   .reg .b32 %r<8>;\n    .reg .pred %p<2>;\n    .reg .b64 %rd<8>;\n\
         \x20   ld.param.u64 %rd0, [pin];\n    ld.param.u64 %rd1, [pout];\n    ld.param.u64 %rd2, [ppred];\n\
         \x20   ld.param.u32 %r2, [pb];\n    ld.param.u32 %r3, [pc];\n\
         \x20   mov.u32 %r0, %laneid;\n    mul.wide.u32 %rd3, %r0, 4;\n\
         \x20   add.s64 %rd4, %rd0, %rd3;\n    ld.global.u32 %r1, [%rd4];\n\
         \x20   shfl.sync.{mode}.b32 %r4|%p1, %r1, %r2, %r3, 0xffffffff;\n\
         \x20   selp.u32 %r5, 1, 0, %p1;\n\
         \x20   add.s64 %rd5, %rd1, %rd3;\n    st.global.u32 [%rd5], %r4;\n\
         \x20   add.s64 %rd6, %rd2, %rd3;\n    st.global.u32 [%rd6], %r5;\n\
         \x20   ret;\n}}\n"
    )
}

/// Runs `shfl.sync.MODE` with operands b, c; returns each lane's (value, predicate).
fn run_shfl(mode: &str, b: u32, c: u32, input: &[u32]) -> Vec<(u32, bool)> {
    let mut dev = Device::new();
    let pin = dev.upload(&u32_bytes(input));
    let pout = poisoned_words(&mut dev, 32);
    let ppred = poisoned_words(&mut dev, 32);
    launch_one_cta(
        &mut dev,
        &shfl_kernel(mode),
        "shfl_test",
        32,
        &[
            KernelArg::Ptr(pin),
            KernelArg::Ptr(pout),
            KernelArg::Ptr(ppred),
            KernelArg::U32(b),
            KernelArg::U32(c),
        ],
    );
    let values = read_u32s(&dev, pout, 32);
    let preds = read_u32s(&dev, ppred, 32);
    for (lane, &p) in preds.iter().enumerate() {
        assert!(p <= 1, "shfl.{mode} lane {lane}: predicate not stored");
    }
    values
        .into_iter()
        .zip(preds.into_iter().map(|p| p == 1))
        .collect()
}

#[test]
fn shfl_sync_modes_follow_the_isa_pseudocode() {
    let input: Vec<u32> = (0..32u32).map(|l| 1000 + l * l).collect();
    // (mode, b, c): c = ((32 - width) << 8) | clamp, as CUDA's __shfl_*_sync emit it
    // (clamp 0 for up, 31 otherwise), plus clamps below 31 without segments.
    let cases: &[(&str, u32, u32)] = &[
        ("up", 1, 0),
        ("up", 5, 0),
        ("up", 3, 0x1800), // width 8
        ("up", 0, 0),
        ("down", 1, 0x1f),
        ("down", 7, 0x1f),
        ("down", 2, 0x181f), // width 8
        ("down", 3, 0x0f),   // clamp at lane 15
        ("bfly", 1, 0x1f),
        ("bfly", 16, 0x1f),
        ("bfly", 4, 0x181f),
        ("bfly", 8, 0x181f), // crosses the 8-lane segment: allowed only downward
        ("bfly", 3, 0x0f),
        ("idx", 5, 0x1f),
        ("idx", 31, 0x1f),
        ("idx", 3, 0x181f), // lane 3 of each 8-lane segment
        ("idx", 20, 0x0f),  // beyond the clamp: own value, predicate false
        ("idx", 37, 0x1f),  // only b[4:0] counts: lane 5
    ];
    for &(mode, b, c) in cases {
        let got = run_shfl(mode, b, c, &input);
        for (lane, &value) in got.iter().enumerate() {
            let (src, p) = shfl_model(mode, lane as i32, b, c);
            assert_eq!(
                value,
                (input[src as usize], p),
                "shfl.sync.{mode} b={b} c={c:#x} lane {lane}: want lane {src}'s value, predicate {p}"
            );
        }
    }
}

#[test]
fn shfl_sync_hand_checked_lanes() {
    // A few results worked out by hand, anchoring the model above.
    let input: Vec<u32> = (0..32u32).map(|l| 1000 + l * l).collect();
    let up = run_shfl("up", 1, 0, &input);
    assert_eq!(up[0], (1000, false)); // nothing below lane 0: own value
    assert_eq!(up[5], (1016, true)); // lane 4's value
    let down = run_shfl("down", 2, 0x181f, &input);
    assert_eq!(down[5], (1049, true)); // lane 7: still in segment 0..7
    assert_eq!(down[6], (1036, false)); // lane 8 is in the next segment: own value
    let bfly = run_shfl("bfly", 8, 0x181f, &input);
    assert_eq!(bfly[2], (1004, false)); // lane 10 > maxLane 7
    assert_eq!(bfly[10], (1004, true)); // lane 2 <= maxLane 15
    let idx = run_shfl("idx", 3, 0x181f, &input);
    assert_eq!(idx[13], (1121, true)); // lane 8 + 3 = 11
    let clamped = run_shfl("idx", 20, 0x0f, &input);
    assert_eq!(clamped[7], (1049, false));
}

// ---------------------------------------------------------------- vote.sync

fn vote_kernel() -> String {
    format!(
        "{HEADER}.visible .entry vote_test(.param .u64 pin, .param .u64 pout, .param .u32 pmask)\n{{\n\
         \x20   .reg .b32 %r<12>;\n    .reg .pred %p<6>;\n    .reg .b64 %rd<6>;\n\
         \x20   ld.param.u64 %rd0, [pin];\n    ld.param.u64 %rd1, [pout];\n    ld.param.u32 %r9, [pmask];\n\
         \x20   mov.u32 %r0, %tid.x;\n    mul.wide.u32 %rd2, %r0, 4;\n\
         \x20   add.s64 %rd3, %rd0, %rd2;\n    ld.global.u32 %r1, [%rd3];\n\
         \x20   setp.ne.u32 %p1, %r1, 0;\n\
         \x20   vote.sync.all.pred %p2, %p1, %r9;\n\
         \x20   vote.sync.any.pred %p3, %p1, %r9;\n\
         \x20   vote.sync.uni.pred %p4, %p1, %r9;\n\
         \x20   vote.sync.ballot.b32 %r5, %p1, %r9;\n\
         \x20   vote.sync.ballot.b32 %r6, !%p1, %r9;\n\
         \x20   selp.u32 %r2, 1, 0, %p2;\n    selp.u32 %r3, 1, 0, %p3;\n    selp.u32 %r4, 1, 0, %p4;\n\
         \x20   mul.wide.u32 %rd4, %r0, 20;\n    add.s64 %rd5, %rd1, %rd4;\n\
         \x20   st.global.u32 [%rd5], %r2;\n    st.global.u32 [%rd5+4], %r3;\n    st.global.u32 [%rd5+8], %r4;\n\
         \x20   st.global.u32 [%rd5+12], %r5;\n    st.global.u32 [%rd5+16], %r6;\n\
         \x20   ret;\n}}\n"
    )
}

#[test]
fn vote_sync_all_any_uni_ballot() {
    /// Threads in the CTA, and the predicate of each lane.
    type Case = (u32, fn(u32) -> bool);
    let cases: [Case; 6] = [
        (32, |_| true),
        (32, |_| false),
        (32, |l| l % 3 == 0),
        (32, |l| l == 31),
        (20, |_| true), // partial warp: lanes 20..31 do not exist
        (20, |l| l % 2 == 1),
    ];
    for (threads, pred) in cases {
        let input: Vec<u32> = (0..threads).map(|l| u32::from(pred(l))).collect();
        let mask = if threads == 32 {
            u32::MAX
        } else {
            (1 << threads) - 1
        };
        let mut dev = Device::new();
        let pin = dev.upload(&u32_bytes(&input));
        let pout = poisoned_words(&mut dev, threads as usize * 5);
        launch_one_cta(
            &mut dev,
            &vote_kernel(),
            "vote_test",
            threads,
            &[
                KernelArg::Ptr(pin),
                KernelArg::Ptr(pout),
                KernelArg::U32(mask),
            ],
        );
        let out = read_u32s(&dev, pout, threads as usize * 5);
        // Hand derivation over the member lanes (all lanes of the CTA here).
        let ballot: u32 = (0..threads).filter(|&l| pred(l)).map(|l| 1 << l).sum();
        let all = ballot == mask;
        let any = ballot != 0;
        let uni = all || !any;
        for lane in 0..threads as usize {
            assert_eq!(
                &out[lane * 5..lane * 5 + 5],
                &[
                    u32::from(all),
                    u32::from(any),
                    u32::from(uni),
                    ballot,
                    !ballot & mask
                ],
                "vote with {threads} threads, ballot {ballot:#x}: lane {lane} (all, any, uni, ballot, ballot of !p)"
            );
        }
    }
}

// ---------------------------------------------------- collectives in divergent code

/// Lanes 0..16 and 16..32 take different branches and each half runs its own
/// `vote.sync.ballot` and `shfl.sync.bfly` with a membermask naming only its half.
fn divergent_kernel() -> String {
    let half = |label: &str, mask: &str| {
        format!(
            "{label}:\n\
             \x20   vote.sync.ballot.b32 %r5, %p1, {mask};\n\
             \x20   shfl.sync.bfly.b32 %r6, %r1, 1, 31, {mask};\n\
             \x20   bra.uni DONE;\n"
        )
    };
    format!(
        "{HEADER}.visible .entry divergent_test(.param .u64 pin, .param .u64 pout)\n{{\n\
         \x20   .reg .b32 %r<8>;\n    .reg .pred %p<3>;\n    .reg .b64 %rd<6>;\n\
         \x20   ld.param.u64 %rd0, [pin];\n    ld.param.u64 %rd1, [pout];\n\
         \x20   mov.u32 %r0, %tid.x;\n    mul.wide.u32 %rd2, %r0, 4;\n\
         \x20   add.s64 %rd3, %rd0, %rd2;\n    ld.global.u32 %r1, [%rd3];\n\
         \x20   and.b32 %r2, %r1, 1;\n    setp.ne.u32 %p1, %r2, 0;\n\
         \x20   setp.lt.u32 %p2, %r0, 16;\n    @!%p2 bra UPPER;\n\
         {lower}{upper}\
         DONE:\n\
         \x20   mul.wide.u32 %rd4, %r0, 8;\n    add.s64 %rd5, %rd1, %rd4;\n\
         \x20   st.global.u32 [%rd5], %r5;\n    st.global.u32 [%rd5+4], %r6;\n\
         \x20   ret;\n}}\n",
        lower = half("LOWER", "0x0000ffff"),
        upper = half("UPPER", "0xffff0000"),
    )
}

#[test]
fn collectives_in_divergent_halves_of_a_warp() {
    // Odd inputs set the predicate; values are distinct per lane.
    let input: Vec<u32> = (0..32u32)
        .map(|l| 100 + 3 * l + (l % 5 == 0) as u32)
        .collect();
    let mut dev = Device::new();
    let pin = dev.upload(&u32_bytes(&input));
    let pout = poisoned_words(&mut dev, 64);
    launch_one_cta(
        &mut dev,
        &divergent_kernel(),
        "divergent_test",
        32,
        &[KernelArg::Ptr(pin), KernelArg::Ptr(pout)],
    );
    let out = read_u32s(&dev, pout, 64);
    let odd: u32 = (0..32)
        .filter(|&l| input[l] & 1 == 1)
        .map(|l| 1u32 << l)
        .sum();
    for lane in 0..32 {
        // The ballot covers only the lane's half; bfly 1 swaps neighbours, which are
        // always in the same half.
        let half_mask = if lane < 16 { 0x0000_ffff } else { 0xffff_0000 };
        assert_eq!(out[2 * lane], odd & half_mask, "lane {lane} ballot");
        assert_eq!(
            out[2 * lane + 1],
            input[lane ^ 1],
            "lane {lane} shfl.bfly 1"
        );
    }
}

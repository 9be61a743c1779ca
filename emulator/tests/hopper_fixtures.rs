//! Triton's own Hopper kernels (`emulator/fixtures/gen_hopper.py`, Triton 3.9, sm_90a)
//! in the emulator: tutorial 09's TMA-descriptor matmul and persistent matmul, and
//! tutorial 06's fused attention forward (D = 64, causal and not; D = 128). Each runs on
//! seeded random f16 inputs, with its host-side tensor maps built from the fixture's
//! `tensor_maps` metadata as Triton's launcher builds them, and is compared with an f64
//! reference; the launch must report no checker finding. Matmul sizes are not multiples
//! of the tiles (TMA fills out-of-bounds K with zeros and clips the stores); the
//! persistent kernel runs 12 tiles on 4 programs. Attention needs N_CTX to be a multiple
//! of BLOCK_M (128): the tutorial's kernel reads key blocks unmasked and its query boxes
//! run into the next head. Edited copies (an mbarrier wait or the final
//! `wgmma.wait_group 0` removed) must report their named findings.
//!
//! Tolerances (relative 2-norm error): f32 output of an f32-accumulated f16 product,
//! 1e-6 (only the summation order differs); f16 outputs, 2e-3 (one f16 rounding,
//! 2^-11 relative, of the output, and for attention also of P before P V); the
//! logsumexp M, 1e-5 (f32 with `ex2.approx`, 2 ulps).

mod triton_support;

use jagged_emu::{CheckKind, Device, DevicePtr, EmuError, KernelArg, LaunchStats};
use triton_support::{Dtype, Fixture, Rng, poisoned, rel_err};

/// Runs `fx` (its PTX replaced by `ptx`) on `grid` with `args` (scratch pointers
/// appended).
fn launch(
    dev: &mut Device,
    fx: &Fixture,
    ptx: &str,
    grid: [u32; 3],
    args: Vec<KernelArg>,
) -> Result<LaunchStats, EmuError> {
    let module = fx.module(ptx);
    dev.launch(&module, &fx.kernel, &fx.config(grid), &fx.args(args))
}

/// A tutorial-09 matmul problem: C[M, N] = A[M, K] @ B[N, K]^T, f16 in.
struct Matmul {
    fixture: &'static str,
    m: usize,
    n: usize,
    k: usize,
    /// C's element type (the fixture's `c_desc`).
    c: Dtype,
    block_m: usize,
    block_n: usize,
    /// Programs launched: `None` for one per tile, else the persistent NUM_SMS.
    programs: Option<usize>,
}

impl Matmul {
    /// Runs the fixture (or its edited PTX); returns the launch result and C's relative
    /// error against the f64 reference.
    fn run(&self, ptx: &str, seed: u64) -> (Result<LaunchStats, EmuError>, f64) {
        let fx = Fixture::load(self.fixture);
        let mut rng = Rng::new(seed);
        let mut dev = Device::new();
        let (a, ra) = Dtype::F16.upload(&mut dev, &rng.vec(self.m * self.k, -1.0, 1.0));
        let (b, rb) = Dtype::F16.upload(&mut dev, &rng.vec(self.n * self.k, -1.0, 1.0));
        let c = poisoned(&mut dev, self.m * self.n * self.c.size());
        let mut args = Vec::new();
        args.extend(fx.desc_args("a_desc", a, [self.m, self.k]));
        args.extend(fx.desc_args("b_desc", b, [self.n, self.k]));
        args.extend(fx.desc_args("c_desc", c, [self.m, self.n]));
        args.extend([self.m, self.n, self.k].map(|v| KernelArg::I32(v as i32)));
        let tiles = self.m.div_ceil(self.block_m) * self.n.div_ceil(self.block_n);
        let grid = [self.programs.unwrap_or(tiles) as u32, 1, 1];
        let result = launch(&mut dev, &fx, ptx, grid, args);
        let out = self.c.read(&dev, c, self.m * self.n);
        let mut reference = vec![0f64; self.m * self.n];
        for i in 0..self.m {
            for j in 0..self.n {
                let (ar, br) = (&ra[i * self.k..][..self.k], &rb[j * self.k..][..self.k]);
                reference[i * self.n + j] = ar.iter().zip(br).map(|(x, y)| x * y).sum();
            }
        }
        (result, rel_err(&out, &reference))
    }

    fn tolerance(&self) -> f64 {
        if self.c == Dtype::F32 { 1e-6 } else { 2e-3 }
    }
}

const MATMULS: [Matmul; 2] = [
    // 128x128x64 tiles, 2 x 2 programs; K = 200 ends in a partial box of 8.
    Matmul {
        fixture: "hopper_matmul_tma",
        m: 200,
        n: 136,
        k: 200,
        c: Dtype::F32,
        block_m: 128,
        block_n: 128,
        programs: None,
    },
    // 128x64x64 tiles: 3 x 4 = 12 tiles on NUM_SMS = 4 programs, 3 each.
    Matmul {
        fixture: "hopper_matmul_persistent",
        m: 328,
        n: 200,
        k: 136,
        c: Dtype::F16,
        block_m: 128,
        block_n: 64,
        programs: Some(4),
    },
];

/// A tutorial-06 attention problem: Z x H heads of N_CTX rows, D = HEAD_DIM, f16.
struct Attention {
    fixture: &'static str,
    z: usize,
    h: usize,
    n_ctx: usize,
    d: usize,
    causal: bool,
}

/// Outputs of one attention run: the launch result, O's and M's relative errors.
struct AttentionRun {
    result: Result<LaunchStats, EmuError>,
    o_err: f64,
    m_err: f64,
}

impl Attention {
    fn run(&self, ptx: &str, seed: u64) -> AttentionRun {
        let fx = Fixture::load(self.fixture);
        let (heads, n, d) = (self.z * self.h, self.n_ctx, self.d);
        let rows = heads * n;
        let mut rng = Rng::new(seed);
        let mut dev = Device::new();
        let mut input = |dev: &mut Device| Dtype::F16.upload(dev, &rng.vec(rows * d, -1.0, 1.0));
        let (q, rq) = input(&mut dev);
        let (k, rk) = input(&mut dev);
        let (v, rv) = input(&mut dev);
        let o: DevicePtr = poisoned(&mut dev, rows * d * 2);
        let lse = poisoned(&mut dev, rows * 4);
        let sm_scale = 0.5f32;
        let mut args = vec![
            KernelArg::F32(sm_scale),
            KernelArg::Ptr(lse),
            KernelArg::I32(self.z as i32),
            KernelArg::I32(self.h as i32),
        ];
        for (name, p) in [("desc_q", q), ("desc_k", k), ("desc_v", v), ("desc_o", o)] {
            args.extend(fx.desc_args(name, p, [rows, d]));
        }
        args.push(KernelArg::I32(n as i32));
        let grid = [(n / 128) as u32, heads as u32, 1];
        let result = launch(&mut dev, &fx, ptx, grid, args);
        let got_o = Dtype::F16.read(&dev, o, rows * d);
        let got_m = Dtype::F32.read(&dev, lse, rows);
        let (mut ref_o, mut ref_m) = (vec![0f64; rows * d], vec![0f64; rows]);
        for hd in 0..heads {
            for i in 0..n {
                let r = hd * n + i;
                let keys = if self.causal { i + 1 } else { n };
                let s: Vec<f64> = (0..keys)
                    .map(|j| {
                        let c = hd * n + j;
                        let dot: f64 = (0..d).map(|x| rq[r * d + x] * rk[c * d + x]).sum();
                        dot * f64::from(sm_scale)
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = p.iter().sum();
                ref_m[r] = (max + sum.ln()) / std::f64::consts::LN_2;
                for x in 0..d {
                    let pv: f64 = (0..keys).map(|j| p[j] * rv[(hd * n + j) * d + x]).sum();
                    ref_o[r * d + x] = pv / sum;
                }
            }
        }
        AttentionRun {
            result,
            o_err: rel_err(&got_o, &ref_o),
            m_err: rel_err(&got_m, &ref_m),
        }
    }
}

const ATTENTIONS: [Attention; 3] = [
    Attention {
        fixture: "hopper_attention_d64",
        z: 1,
        h: 2,
        n_ctx: 256,
        d: 64,
        causal: false,
    },
    Attention {
        fixture: "hopper_attention_d64_causal",
        z: 2,
        h: 1,
        n_ctx: 256,
        d: 64,
        causal: true,
    },
    Attention {
        fixture: "hopper_attention_d128",
        z: 1,
        h: 2,
        n_ctx: 128,
        d: 128,
        causal: false,
    },
];

fn clean(what: &str, result: Result<LaunchStats, EmuError>) -> LaunchStats {
    let stats = result.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(stats.warnings.is_empty(), "{what}: {:?}", stats.warnings);
    assert!(stats.profile.wgmma > 0, "{what}: no wgmma executed");
    stats
}

#[test]
fn tutorial_matmuls_match_the_reference() {
    for mm in &MATMULS {
        let ptx = Fixture::load(mm.fixture).ptx;
        let (result, err) = mm.run(&ptx, 0x9090 + mm.k as u64);
        clean(mm.fixture, result);
        eprintln!("{}: relative error {err:.3e}", mm.fixture);
        assert!(
            err <= mm.tolerance(),
            "{}: relative error {err}",
            mm.fixture
        );
    }
}

#[test]
fn tutorial_attention_matches_the_reference() {
    for at in &ATTENTIONS {
        let ptx = Fixture::load(at.fixture).ptx;
        let run = at.run(&ptx, 0x0a77 + at.d as u64);
        clean(at.fixture, run.result);
        eprintln!("{}: O {:.3e}, M {:.3e}", at.fixture, run.o_err, run.m_err);
        assert!(
            run.o_err <= 2e-3,
            "{}: O relative error {}",
            at.fixture,
            run.o_err
        );
        assert!(
            run.m_err <= 1e-5,
            "{}: M relative error {}",
            at.fixture,
            run.m_err
        );
    }
}

/// `ptx` without its first line containing `pattern` and the `extra` lines after it.
fn without(ptx: &str, pattern: &str, extra: usize) -> String {
    let at = ptx
        .lines()
        .position(|l| l.contains(pattern))
        .unwrap_or_else(|| panic!("no line containing `{pattern}`"));
    let lines: Vec<&str> = ptx.lines().collect();
    let kept: Vec<&str> = lines[..at]
        .iter()
        .chain(&lines[at + 1 + extra..])
        .copied()
        .collect();
    kept.join("\n") + "\n"
}

/// The findings of an edited fixture, which must fail the memory check.
fn findings(fixture: &str, result: Result<LaunchStats, EmuError>) -> Vec<CheckKind> {
    match result {
        Err(EmuError::MemoryCheck(r)) => r.into_iter().map(|r| r.kind).collect(),
        Err(e) => panic!("{fixture}: expected a memory-check failure, got: {e}"),
        Ok(_) => panic!("{fixture}: the planted bug was not reported"),
    }
}

/// Each fixture with its first mbarrier wait removed (the `try_wait` loop: the first
/// wgmma reads a TMA box still in flight), and with its last `wgmma.wait_group 0`
/// removed (the epilogue reads accumulators in flight).
#[test]
fn planted_wait_bugs_are_reported() {
    let plants: [(&str, &str, usize, CheckKind); 2] = [
        (
            "mbarrier wait",
            "mbarrier.try_wait.parity",
            1,
            CheckKind::PendingAsyncCopyRead,
        ),
        (
            "wgmma.wait_group 0",
            "wgmma.wait_group.sync.aligned 0",
            0,
            CheckKind::WgmmaRegisterInFlight,
        ),
    ];
    for (what, pattern, extra, kind) in plants {
        for mm in &MATMULS {
            let ptx = without(&Fixture::load(mm.fixture).ptx, pattern, extra);
            let got = findings(mm.fixture, mm.run(&ptx, 1).0);
            assert!(got.contains(&kind), "{}: {what}: {got:?}", mm.fixture);
        }
        for at in &ATTENTIONS {
            let ptx = without(&Fixture::load(at.fixture).ptx, pattern, extra);
            let got = findings(at.fixture, at.run(&ptx, 1).result);
            assert!(got.contains(&kind), "{}: {what}: {got:?}", at.fixture);
        }
    }
}

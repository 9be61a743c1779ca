//! The Triton conformance corpus: the kernels of `emulator/fixtures/corpus/` (written in the
//! style of public Triton kernels of the jagged / recommendation field, compiled by
//! `gen_corpus.py` for sm_80 and sm_90a) run in the emulator, memory checker on, on seeded
//! random inputs (jagged layouts with empty sequences and lengths that are not multiples of
//! the block) and are compared with an f64 reference computed here. Outputs start poisoned
//! (0xFF bytes) where the kernel must write every element.

mod triton_support;

use jagged_emu::{CheckKind, Device, DevicePtr, KernelArg, LaunchStats};
use triton_support::{Dtype, Fixture, Rng, i32_bytes, i32s, jagged_offsets, poisoned, rel_err};

/// Tolerance for f32 math.
const F32_TOL: f64 = 1e-5;
/// Tolerance for f32 inputs multiplied in tf32.
const TF32_TOL: f64 = 1e-3;
/// Tolerance for f16 inputs or outputs.
const F16_TOL: f64 = 2e-3;
/// Tolerance for bf16 inputs or outputs.
const BF16_TOL: f64 = 1e-2;

/// Every kernel of the corpus.
const CORPUS: &[&str] = &[
    "jagged_mean",
    "jagged_max",
    "jagged_max_bwd",
    "jagged_sort_desc",
    "jagged_softmax_fwd",
    "jagged_softmax_bwd",
    "jagged_cumsum",
    "jagged_to_padded",
    "padded_to_jagged",
    "jagged_dense_mul",
    "jagged_dense_mul_bwd",
    "jagged_dense_bmm",
    "jagged_dense_bmm_bwd",
    "jagged_jagged_bmm",
    "jagged_jagged_bmm_f16",
    "jagged_attention_fwd",
    "jagged_attention_bwd",
    "jagged_sum_i64",
    "layernorm_fwd",
    "layernorm_bwd",
    "rmsnorm_fwd",
    "rmsnorm_bwd",
    "embedding_bag",
    "embedding_bag_bwd",
    "embedding_bag_bwd_f16",
    "cross_entropy_fwd",
    "cross_entropy_bwd",
    "dropout_fwd",
    "dropout_bwd",
    "gelu_fwd",
    "gelu_bwd",
    "silu_fwd",
    "silu_bwd",
    "segment_sum_atomic",
    "masked_select",
    "histogram_bins",
    "segment_max_atomic",
];

/// Kernels whose sm_90a PTX uses `wgmma` (Triton's Hopper `tl.dot` with 64-row tiles),
/// which the emulator does not run: the generator writes them for sm_80 only.
const SM80_ONLY: &[&str] = &["jagged_dense_bmm", "jagged_jagged_bmm_f16"];

/// The architectures `name` is compiled for.
fn compiled_archs(name: &str) -> &'static [&'static str] {
    if SM80_ONLY.contains(&name) {
        &["sm_80"]
    } else {
        &["sm_80", "sm_90a"]
    }
}

/// The architectures `name` is compiled for (the emulator runs them all).
fn archs(name: &str) -> Vec<&'static str> {
    compiled_archs(name).to_vec()
}

fn fixture(name: &str, arch: &str) -> Fixture {
    Fixture::load(&format!("corpus/{name}.{arch}"))
}

/// Launches the corpus kernel `name` for `arch` with the user arguments `args`.
fn launch(
    dev: &mut Device,
    name: &str,
    arch: &str,
    grid: [u32; 3],
    args: Vec<KernelArg>,
) -> LaunchStats {
    let fx = fixture(name, arch);
    let module = fx.module(&fx.ptx);
    let stats = dev
        .launch(&module, &fx.kernel, &fx.config(grid), &fx.args(args))
        .unwrap_or_else(|e| panic!("{name} ({arch}) failed: {e}"));
    assert!(stats.warp_instructions > 0);
    // The only findings allowed are benign races: warps of a replicated layout storing
    // the same value to shared memory.
    for w in &stats.warnings {
        assert_eq!(w.kind, CheckKind::SharedRace, "{name} ({arch}): {w:?}");
    }
    stats
}

/// Asserts `out` is within `tol` (relative 2-norm) of `reference`.
fn check(what: &str, arch: &str, out: &[f32], reference: &[f64], tol: f64) {
    let err = rel_err(out, reference);
    assert!(err <= tol, "{what} ({arch}): relative error {err} > {tol}");
}

fn ptr(p: DevicePtr) -> KernelArg {
    KernelArg::Ptr(p)
}

fn int(v: usize) -> KernelArg {
    KernelArg::I32(v as i32)
}

fn flag(v: bool) -> KernelArg {
    KernelArg::U8(u8::from(v))
}

/// A jagged layout: sequence lengths and their offsets.
struct Jagged {
    lengths: Vec<usize>,
    offsets: Vec<i32>,
    total: usize,
}

impl Jagged {
    fn new(lengths: &[usize]) -> Jagged {
        let offsets = jagged_offsets(lengths);
        Jagged {
            lengths: lengths.to_vec(),
            total: offsets[lengths.len()] as usize,
            offsets,
        }
    }

    fn batch(&self) -> usize {
        self.lengths.len()
    }

    fn max_len(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }

    /// (sequence, first row, length) of every sequence.
    fn seqs(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.lengths
            .iter()
            .enumerate()
            .map(|(b, &len)| (b, self.offsets[b] as usize, len))
    }

    /// Asserts that the `width` outputs of every empty sequence in `out [B, width]` are
    /// exactly zero (written, not left poisoned).
    fn assert_empty_rows_zero(&self, out: &[f32], width: usize, arch: &str) {
        for (b, _, len) in self.seqs() {
            if len == 0 {
                let row = &out[b * width..(b + 1) * width];
                assert!(row.iter().all(|&v| v == 0.0), "empty sequence {b} ({arch})");
            }
        }
    }

    fn upload_offsets(&self, dev: &mut Device) -> DevicePtr {
        dev.upload(&i32_bytes(&self.offsets))
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// erf by its Taylor series (inputs here stay within |x| < 4: about 1e-9 absolute).
fn erf(x: f64) -> f64 {
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
        n += 1.0;
        term *= -x * x / n;
        sum += term / (2.0 * n + 1.0);
        if n > 200.0 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

// ------------------------------------------------------------------------- the corpus files

#[test]
fn corpus_has_every_kernel_for_its_archs_and_each_parses() {
    assert!(CORPUS.len() >= 20);
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus");
    for &name in CORPUS {
        for arch in ["sm_80", "sm_90a"] {
            let present = dir.join(format!("{name}.{arch}.ptx")).exists();
            assert_eq!(
                present,
                compiled_archs(name).contains(&arch),
                "{name}.{arch}.ptx"
            );
        }
        for arch in archs(name) {
            let fx = fixture(name, arch);
            assert!(fx.ptx.contains(&format!(".target {arch}")), "{name}.{arch}");
            assert!(!fx.ptx.contains("wgmma"), "{name}.{arch}");
            let module = fx.module(&fx.ptx);
            let names: Vec<&str> = module.kernel_names().collect();
            assert_eq!(names, vec![fx.kernel.as_str()], "{name}.{arch}");
        }
    }
    // Every non-scratch parameter's PTX type matches its Triton type: runtime bools are
    // `.u8`, scalars keep their width, pointers are `.u64`.
    for &name in CORPUS {
        for &arch in compiled_archs(name) {
            let json = std::fs::read_to_string(dir.join(format!("{name}.{arch}.json")))
                .expect("fixture json");
            let field = |chunk: &str, key: &str| -> Option<String> {
                let at = chunk.find(&format!("\"{key}\": \""))? + key.len() + 5;
                Some(chunk[at..at + chunk[at..].find('"')?].to_string())
            };
            let mut typed = 0;
            for chunk in json.split('{').filter(|c| c.contains("\"triton_type\"")) {
                let (ptx, triton) = (
                    field(chunk, "ptx_type").unwrap(),
                    field(chunk, "triton_type").unwrap(),
                );
                let want = match triton.as_str() {
                    "i1" => ".u8",
                    "i32" => ".u32",
                    "i64" => ".u64",
                    "fp32" => ".f32",
                    t if t.starts_with('*') => ".u64",
                    t => panic!("{name}.{arch}: unexpected Triton type {t}"),
                };
                assert_eq!(ptx, want, "{name}.{arch}: a {triton} parameter");
                typed += 1;
            }
            assert!(typed > 0, "{name}.{arch}: no typed parameters");
        }
    }
    // No stray fixture outside the list.
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let file = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        let name = file.split('.').next().expect("name");
        assert!(CORPUS.contains(&name), "{file} is not in CORPUS");
    }
}

/// A random jagged layout of `batch` sequences: about one in five empty, the others 1..=max rows.
fn random_layout(rng: &mut Rng, batch: usize, max: usize) -> Jagged {
    let lengths: Vec<usize> = (0..batch)
        .map(|_| {
            if rng.next_u64().is_multiple_of(5) {
                0
            } else {
                1 + (rng.next_u64() % max as u64) as usize
            }
        })
        .collect();
    Jagged::new(&lengths)
}

#[test]
fn jagged_kernels_on_random_layouts() {
    let mut rng = Rng::new(0xc0_1000);
    for _ in 0..2 {
        // Kernels that hold a whole sequence in one 64-row block.
        let short = random_layout(&mut rng, 24, 64);
        jagged_softmax_fwd_f32_on(&short);
        jagged_softmax_bwd_f32_on(&short);
        jagged_sort_desc_f32_on(&short);
        let long = random_layout(&mut rng, 24, 150);
        jagged_mean_f32_on(&long);
        jagged_max_bwd_bf16_on(&long);
        jagged_sum_i64_offsets_bf16_on(&long);
        jagged_cumsum_f32_on(&long);
        jagged_to_padded_f16_on(&long);
        padded_to_jagged_f16_on(&long);
        jagged_dense_mul_bwd_bf16_with_accumulate_flag_on(&long);
        jagged_dense_bmm_tf32_on(&long);
        jagged_dense_bmm_bwd_tf32_on(&long);
        jagged_jagged_bmm_bf16_on(&long);
        jagged_jagged_bmm_f16_on(&long);
        jagged_attention_fwd_f16_causal_and_not_on(&long);
    }
}

// ------------------------------------------------------------------------- jagged reductions

#[test]
fn jagged_mean_f32() {
    jagged_mean_f32_on(&Jagged::new(&[0, 1, 15, 16, 17, 50, 0, 3]));
}

fn jagged_mean_f32_on(jag: &Jagged) {
    let d = 24; // runtime D inside a 32-wide block
    let mut rng = Rng::new(0xc0_0001);
    let x = rng.vec(jag.total * d, -1.0, 1.0);
    let mut reference = vec![0f64; jag.batch() * d];
    for (b, start, len) in jag.seqs() {
        for r in start..start + len {
            for c in 0..d {
                reference[b * d + c] += f64::from(x[r * d + c]) / len as f64;
            }
        }
    }
    for arch in archs("jagged_mean") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F32.upload(&mut dev, &x);
        let off = jag.upload_offsets(&mut dev);
        let out = poisoned(&mut dev, reference.len() * 4);
        let args = vec![ptr(x_dev), ptr(off), ptr(out), int(d)];
        launch(
            &mut dev,
            "jagged_mean",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, out, reference.len());
        jag.assert_empty_rows_zero(&got, d, arch);
        check("jagged_mean", arch, &got, &reference, F32_TOL);
    }
}

#[test]
fn jagged_max_bf16() {
    let jag = Jagged::new(&[0, 1, 15, 16, 33, 0, 7]);
    let d = 32;
    let mut rng = Rng::new(0xc0_0002);
    let x = rng.vec(jag.total * d, -3.0, 3.0);
    let xr = Dtype::Bf16.round(&x);
    let mut reference = vec![0f64; jag.batch() * d];
    for (b, start, len) in jag.seqs() {
        if len == 0 {
            continue;
        }
        for c in 0..d {
            reference[b * d + c] = (start..start + len)
                .map(|r| xr[r * d + c])
                .fold(f64::NEG_INFINITY, f64::max);
        }
    }
    for arch in archs("jagged_max") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::Bf16.upload(&mut dev, &x);
        let off = jag.upload_offsets(&mut dev);
        let out = poisoned(&mut dev, reference.len() * 2);
        let args = vec![ptr(x_dev), ptr(off), ptr(out)];
        launch(
            &mut dev,
            "jagged_max",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::Bf16.read(&dev, out, reference.len());
        // The max of bf16 values is one of them: exact.
        for (i, (&g, &r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(f64::from(g), r, "jagged_max ({arch}) element {i}");
        }
        check("jagged_max", arch, &got, &reference, BF16_TOL);
    }
}

/// Per-sequence, per-column softmax over the rows of `x` (jagged [T, d]).
fn jagged_softmax_reference(jag: &Jagged, x: &[f32], d: usize) -> Vec<f64> {
    let mut y = vec![0f64; jag.total * d];
    for (_, start, len) in jag.seqs() {
        for c in 0..d {
            let col = |r: usize| f64::from(x[r * d + c]);
            let max = (start..start + len)
                .map(col)
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (start..start + len).map(|r| (col(r) - max).exp()).sum();
            for r in start..start + len {
                y[r * d + c] = (col(r) - max).exp() / sum;
            }
        }
    }
    y
}

#[test]
fn jagged_softmax_fwd_f32() {
    jagged_softmax_fwd_f32_on(&Jagged::new(&[0, 1, 13, 64, 40, 0, 5]));
}

fn jagged_softmax_fwd_f32_on(jag: &Jagged) {
    let d = 16;
    let mut rng = Rng::new(0xc0_0003);
    let x = rng.vec(jag.total * d, -4.0, 4.0);
    let reference = jagged_softmax_reference(jag, &x, d);
    for arch in archs("jagged_softmax_fwd") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F32.upload(&mut dev, &x);
        let off = jag.upload_offsets(&mut dev);
        let y = poisoned(&mut dev, reference.len() * 4);
        let args = vec![ptr(x_dev), ptr(off), ptr(y)];
        launch(
            &mut dev,
            "jagged_softmax_fwd",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, y, reference.len());
        check("jagged_softmax_fwd", arch, &got, &reference, F32_TOL);
    }
}

#[test]
fn jagged_softmax_bwd_f32() {
    jagged_softmax_bwd_f32_on(&Jagged::new(&[3, 0, 64, 1, 29]));
}

fn jagged_softmax_bwd_f32_on(jag: &Jagged) {
    let d = 16;
    let mut rng = Rng::new(0xc0_0004);
    let x = rng.vec(jag.total * d, -4.0, 4.0);
    let y: Vec<f32> = jagged_softmax_reference(jag, &x, d)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let dy = rng.vec(jag.total * d, -1.0, 1.0);
    let mut reference = vec![0f64; jag.total * d];
    for (_, start, len) in jag.seqs() {
        for c in 0..d {
            let at = |r: usize| r * d + c;
            let s: f64 = (start..start + len)
                .map(|r| f64::from(y[at(r)]) * f64::from(dy[at(r)]))
                .sum();
            for r in start..start + len {
                reference[at(r)] = f64::from(y[at(r)]) * (f64::from(dy[at(r)]) - s);
            }
        }
    }
    for arch in archs("jagged_softmax_bwd") {
        let mut dev = Device::new();
        let (y_dev, _) = Dtype::F32.upload(&mut dev, &y);
        let (dy_dev, _) = Dtype::F32.upload(&mut dev, &dy);
        let off = jag.upload_offsets(&mut dev);
        let dx = poisoned(&mut dev, reference.len() * 4);
        let args = vec![ptr(y_dev), ptr(dy_dev), ptr(off), ptr(dx)];
        launch(
            &mut dev,
            "jagged_softmax_bwd",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, dx, reference.len());
        check("jagged_softmax_bwd", arch, &got, &reference, F32_TOL);
    }
}

#[test]
fn jagged_cumsum_f32() {
    jagged_cumsum_f32_on(&Jagged::new(&[0, 1, 31, 32, 33, 100, 0]));
}

fn jagged_cumsum_f32_on(jag: &Jagged) {
    // Chunks of 32 rows carry their sum into the next chunk.
    let d = 8;
    let mut rng = Rng::new(0xc0_0005);
    let x = rng.vec(jag.total * d, 0.0, 1.0);
    let mut reference = vec![0f64; jag.total * d];
    for (_, start, len) in jag.seqs() {
        for c in 0..d {
            let mut running = 0.0;
            for r in start..start + len {
                running += f64::from(x[r * d + c]);
                reference[r * d + c] = running;
            }
        }
    }
    for arch in archs("jagged_cumsum") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F32.upload(&mut dev, &x);
        let off = jag.upload_offsets(&mut dev);
        let y = poisoned(&mut dev, reference.len() * 4);
        let args = vec![ptr(x_dev), ptr(off), ptr(y)];
        launch(
            &mut dev,
            "jagged_cumsum",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, y, reference.len());
        check("jagged_cumsum", arch, &got, &reference, F32_TOL);
    }
}

// ------------------------------------------------------------------------- jagged <-> dense

#[test]
fn jagged_to_padded_f16() {
    jagged_to_padded_f16_on(&Jagged::new(&[0, 3, 16, 20, 40, 1]));
}

fn jagged_to_padded_f16_on(jag: &Jagged) {
    // Lengths above max_len are truncated; rows past the length get the padding value.
    let (d, max_len, pad) = (16usize, 24usize, -7.5f32);
    let mut rng = Rng::new(0xc0_0006);
    let x = rng.vec(jag.total * d, -2.0, 2.0);
    let xr = Dtype::F16.round(&x);
    let mut reference = vec![f64::from(pad); jag.batch() * max_len * d];
    for (b, start, len) in jag.seqs() {
        for i in 0..len.min(max_len) {
            for c in 0..d {
                reference[(b * max_len + i) * d + c] = xr[(start + i) * d + c];
            }
        }
    }
    for arch in archs("jagged_to_padded") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F16.upload(&mut dev, &x);
        let off = jag.upload_offsets(&mut dev);
        let out = poisoned(&mut dev, reference.len() * 2);
        let args = vec![
            KernelArg::F32(pad),
            int(max_len),
            ptr(x_dev),
            ptr(off),
            ptr(out),
        ];
        let grid = [jag.batch() as u32, max_len.div_ceil(16) as u32, 1];
        launch(&mut dev, "jagged_to_padded", arch, grid, args);
        let got = Dtype::F16.read(&dev, out, reference.len());
        // A copy: exact.
        for (i, (&g, &r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(f64::from(g), r, "jagged_to_padded ({arch}) element {i}");
        }
        check("jagged_to_padded", arch, &got, &reference, F16_TOL);
    }
}

#[test]
fn padded_to_jagged_f16() {
    padded_to_jagged_f16_on(&Jagged::new(&[0, 3, 16, 20, 40, 1]));
}

fn padded_to_jagged_f16_on(jag: &Jagged) {
    // The backward of jagged_to_padded: rows past max_len get 0.
    let (d, max_len) = (16usize, 24usize);
    let mut rng = Rng::new(0xc0_0007);
    let padded = rng.vec(jag.batch() * max_len * d, -2.0, 2.0);
    let pr = Dtype::F16.round(&padded);
    let mut reference = vec![0f64; jag.total * d];
    for (b, start, len) in jag.seqs() {
        for i in 0..len.min(max_len) {
            for c in 0..d {
                reference[(start + i) * d + c] = pr[(b * max_len + i) * d + c];
            }
        }
    }
    for arch in archs("padded_to_jagged") {
        let mut dev = Device::new();
        let (p_dev, _) = Dtype::F16.upload(&mut dev, &padded);
        let off = jag.upload_offsets(&mut dev);
        let out = poisoned(&mut dev, reference.len() * 2);
        let args = vec![int(max_len), ptr(p_dev), ptr(off), ptr(out)];
        launch(
            &mut dev,
            "padded_to_jagged",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::F16.read(&dev, out, reference.len());
        for (i, (&g, &r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(f64::from(g), r, "padded_to_jagged ({arch}) element {i}");
        }
    }
}

#[test]
fn jagged_dense_mul_bf16() {
    let jag = Jagged::new(&[0, 3, 24, 30, 17, 0]);
    let (d, max_len) = (32usize, 24usize);
    let mut rng = Rng::new(0xc0_0008);
    let x = rng.vec(jag.total * d, -2.0, 2.0);
    let dense = rng.vec(jag.batch() * max_len * d, -2.0, 2.0);
    let (xr, dr) = (Dtype::Bf16.round(&x), Dtype::Bf16.round(&dense));
    let mut reference = vec![0f64; jag.total * d];
    for (b, start, len) in jag.seqs() {
        for i in 0..len.min(max_len) {
            for c in 0..d {
                reference[(start + i) * d + c] =
                    xr[(start + i) * d + c] * dr[(b * max_len + i) * d + c];
            }
        }
    }
    for arch in archs("jagged_dense_mul") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::Bf16.upload(&mut dev, &x);
        let (d_dev, _) = Dtype::Bf16.upload(&mut dev, &dense);
        let off = jag.upload_offsets(&mut dev);
        let out = poisoned(&mut dev, reference.len() * 2);
        let args = vec![ptr(x_dev), ptr(d_dev), ptr(off), ptr(out), int(max_len)];
        launch(
            &mut dev,
            "jagged_dense_mul",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::Bf16.read(&dev, out, reference.len());
        check("jagged_dense_mul", arch, &got, &reference, BF16_TOL);
    }
}

#[test]
fn jagged_dense_mul_bwd_bf16_with_accumulate_flag() {
    jagged_dense_mul_bwd_bf16_with_accumulate_flag_on(&Jagged::new(&[0, 3, 24, 30, 17, 0]));
}

fn jagged_dense_mul_bwd_bf16_with_accumulate_flag_on(jag: &Jagged) {
    let (d, max_len) = (32usize, 24usize);
    let mut rng = Rng::new(0xc0_0009);
    let g = rng.vec(jag.total * d, -1.0, 1.0);
    let x = rng.vec(jag.total * d, -2.0, 2.0);
    let dense = rng.vec(jag.batch() * max_len * d, -2.0, 2.0);
    let dx0 = rng.vec(jag.total * d, -1.0, 1.0);
    let dd0 = rng.vec(jag.batch() * max_len * d, -1.0, 1.0);
    let bf = |v: &[f32]| Dtype::Bf16.round(v);
    let (gr, xr, dr, dx0r, dd0r) = (bf(&g), bf(&x), bf(&dense), bf(&dx0), bf(&dd0));
    for accumulate in [false, true] {
        let keep = if accumulate { 1.0 } else { 0.0 };
        let mut ref_dx: Vec<f64> = dx0r.iter().map(|v| v * keep).collect();
        // ddense rows past the sequence's length (or max_len) are left as they were.
        let mut ref_dd = dd0r.clone();
        for (b, start, len) in jag.seqs() {
            for i in 0..len.min(max_len) {
                for c in 0..d {
                    let (j, p) = ((start + i) * d + c, (b * max_len + i) * d + c);
                    ref_dx[j] += gr[j] * dr[p];
                    ref_dd[p] = dd0r[p] * keep + gr[j] * xr[j];
                }
            }
        }
        for arch in archs("jagged_dense_mul_bwd") {
            let mut dev = Device::new();
            let (g_dev, _) = Dtype::Bf16.upload(&mut dev, &g);
            let (x_dev, _) = Dtype::Bf16.upload(&mut dev, &x);
            let (d_dev, _) = Dtype::Bf16.upload(&mut dev, &dense);
            let off = jag.upload_offsets(&mut dev);
            let (dx, _) = Dtype::Bf16.upload(&mut dev, &dx0);
            let (dd, _) = Dtype::Bf16.upload(&mut dev, &dd0);
            let args = vec![
                flag(accumulate),
                ptr(g_dev),
                ptr(x_dev),
                ptr(d_dev),
                ptr(off),
                ptr(dx),
                ptr(dd),
                int(max_len),
            ];
            launch(
                &mut dev,
                "jagged_dense_mul_bwd",
                arch,
                [jag.batch() as u32, 1, 1],
                args,
            );
            let what = format!("jagged_dense_mul_bwd accumulate={accumulate}");
            let got_dx = Dtype::Bf16.read(&dev, dx, ref_dx.len());
            check(&format!("{what} dx"), arch, &got_dx, &ref_dx, BF16_TOL);
            let got_dd = Dtype::Bf16.read(&dev, dd, ref_dd.len());
            check(&format!("{what} ddense"), arch, &got_dd, &ref_dd, BF16_TOL);
        }
    }
}

#[test]
fn jagged_dense_bmm_tf32() {
    jagged_dense_bmm_tf32_on(&Jagged::new(&[0, 5, 64, 70, 130, 0, 1]));
}

fn jagged_dense_bmm_tf32_on(jag: &Jagged) {
    // 64-row tiles (sm_80 only: Triton emits wgmma for them on sm_90a).
    let (k, n) = (32usize, 32usize);
    let mut rng = Rng::new(0xc0_000a);
    let x = rng.vec(jag.total * k, -1.0, 1.0);
    let y = rng.vec(jag.batch() * k * n, -1.0, 1.0);
    let mut reference = vec![0f64; jag.total * n];
    for (b, start, len) in jag.seqs() {
        for r in start..start + len {
            for j in 0..n {
                reference[r * n + j] = (0..k)
                    .map(|p| f64::from(x[r * k + p]) * f64::from(y[(b * k + p) * n + j]))
                    .sum();
            }
        }
    }
    for arch in archs("jagged_dense_bmm") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F32.upload(&mut dev, &x);
        let (y_dev, _) = Dtype::F32.upload(&mut dev, &y);
        let off = jag.upload_offsets(&mut dev);
        let out = poisoned(&mut dev, reference.len() * 4);
        let args = vec![ptr(x_dev), ptr(y_dev), ptr(off), ptr(out)];
        let grid = [jag.batch() as u32, jag.max_len().div_ceil(64) as u32, 1];
        launch(&mut dev, "jagged_dense_bmm", arch, grid, args);
        let got = Dtype::F32.read(&dev, out, reference.len());
        check("jagged_dense_bmm", arch, &got, &reference, TF32_TOL);
    }
}

#[test]
fn jagged_jagged_bmm_bf16() {
    jagged_jagged_bmm_bf16_on(&Jagged::new(&[0, 3, 32, 50, 77, 0]));
}

fn jagged_jagged_bmm_bf16_on(jag: &Jagged) {
    jagged_jagged_bmm_case("jagged_jagged_bmm", Dtype::Bf16, 32, jag, BF16_TOL);
}

#[test]
fn jagged_jagged_bmm_f16_8_warps_3_stages() {
    // 64x64 outputs over 16-row steps, 8 warps, a 3-stage cp.async pipeline whose trip
    // count is zero for empty sequences (sm_80 only: wgmma on sm_90a).
    jagged_jagged_bmm_f16_on(&Jagged::new(&[0, 3, 16, 17, 50, 0, 1]));
}

fn jagged_jagged_bmm_f16_on(jag: &Jagged) {
    jagged_jagged_bmm_case("jagged_jagged_bmm_f16", Dtype::F16, 64, jag, F16_TOL);
}

/// out[b] = x_b^T g_b ([k, k], f32): the weight gradient of a jagged x dense bmm, for
/// inputs of type `dt`; zero for an empty sequence.
fn jagged_jagged_bmm_case(name: &str, dt: Dtype, k: usize, jag: &Jagged, tol: f64) {
    let n = k;
    let mut rng = Rng::new(0xc0_000b);
    let x = rng.vec(jag.total * k, -1.0, 1.0);
    let g = rng.vec(jag.total * n, -1.0, 1.0);
    let (xr, gr) = (dt.round(&x), dt.round(&g));
    let mut reference = vec![0f64; jag.batch() * k * n];
    for (b, start, len) in jag.seqs() {
        for p in 0..k {
            for j in 0..n {
                reference[(b * k + p) * n + j] = (start..start + len)
                    .map(|r| xr[r * k + p] * gr[r * n + j])
                    .sum();
            }
        }
    }
    for arch in archs(name) {
        let mut dev = Device::new();
        let (x_dev, _) = dt.upload(&mut dev, &x);
        let (g_dev, _) = dt.upload(&mut dev, &g);
        let off = jag.upload_offsets(&mut dev);
        let out = poisoned(&mut dev, reference.len() * 4);
        let args = vec![ptr(x_dev), ptr(g_dev), ptr(off), ptr(out)];
        launch(&mut dev, name, arch, [jag.batch() as u32, 1, 1], args);
        let got = Dtype::F32.read(&dev, out, reference.len());
        jag.assert_empty_rows_zero(&got, k * n, arch);
        check(name, arch, &got, &reference, tol);
    }
}

#[test]
fn jagged_attention_fwd_f16_causal_and_not() {
    jagged_attention_fwd_f16_causal_and_not_on(&Jagged::new(&[0, 1, 17, 32, 45, 0, 70]));
}

fn jagged_attention_fwd_f16_causal_and_not_on(jag: &Jagged) {
    // 32-row query blocks over 16-row key blocks; lengths not multiples of either.
    let d = 32usize;
    let scale = 1.0 / (d as f32).sqrt();
    let mut rng = Rng::new(0xc0_000c);
    let q = rng.vec(jag.total * d, -1.0, 1.0);
    let k = rng.vec(jag.total * d, -1.0, 1.0);
    let v = rng.vec(jag.total * d, -1.0, 1.0);
    let (qr, kr, vr) = (
        Dtype::F16.round(&q),
        Dtype::F16.round(&k),
        Dtype::F16.round(&v),
    );
    for causal in [false, true] {
        let mut reference = vec![0f64; jag.total * d];
        for (_, start, len) in jag.seqs() {
            for i in 0..len {
                let keys = if causal { i + 1 } else { len };
                let s: Vec<f64> = (0..keys)
                    .map(|j| {
                        (0..d)
                            .map(|c| qr[(start + i) * d + c] * kr[(start + j) * d + c])
                            .sum::<f64>()
                            * f64::from(scale)
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let l: f64 = p.iter().sum();
                for c in 0..d {
                    reference[(start + i) * d + c] = (0..keys)
                        .map(|j| p[j] * vr[(start + j) * d + c])
                        .sum::<f64>()
                        / l;
                }
            }
        }
        for arch in archs("jagged_attention_fwd") {
            let mut dev = Device::new();
            let (q_dev, _) = Dtype::F16.upload(&mut dev, &q);
            let (k_dev, _) = Dtype::F16.upload(&mut dev, &k);
            let (v_dev, _) = Dtype::F16.upload(&mut dev, &v);
            let off = jag.upload_offsets(&mut dev);
            let o = poisoned(&mut dev, reference.len() * 2);
            let args = vec![
                KernelArg::F32(scale),
                flag(causal),
                ptr(q_dev),
                ptr(k_dev),
                ptr(v_dev),
                ptr(off),
                ptr(o),
            ];
            let grid = [jag.batch() as u32, jag.max_len().div_ceil(32) as u32, 1];
            launch(&mut dev, "jagged_attention_fwd", arch, grid, args);
            let got = Dtype::F16.read(&dev, o, reference.len());
            check(
                &format!("jagged_attention_fwd causal={causal}"),
                arch,
                &got,
                &reference,
                F16_TOL,
            );
        }
    }
}

#[test]
fn jagged_dense_bmm_bwd_tf32() {
    jagged_dense_bmm_bwd_tf32_on(&Jagged::new(&[0, 5, 32, 33, 70, 0, 1]));
}

fn jagged_dense_bmm_bwd_tf32_on(jag: &Jagged) {
    // dx = g y^T with 32-row tiles: mma.sync tf32 on both archs.
    let (k, n) = (32usize, 32usize);
    let mut rng = Rng::new(0xc0_001d);
    let g = rng.vec(jag.total * n, -1.0, 1.0);
    let y = rng.vec(jag.batch() * k * n, -1.0, 1.0);
    let mut reference = vec![0f64; jag.total * k];
    for (b, start, len) in jag.seqs() {
        for r in start..start + len {
            for p in 0..k {
                reference[r * k + p] = (0..n)
                    .map(|j| f64::from(g[r * n + j]) * f64::from(y[(b * k + p) * n + j]))
                    .sum();
            }
        }
    }
    for arch in archs("jagged_dense_bmm_bwd") {
        let mut dev = Device::new();
        let (g_dev, _) = Dtype::F32.upload(&mut dev, &g);
        let (y_dev, _) = Dtype::F32.upload(&mut dev, &y);
        let off = jag.upload_offsets(&mut dev);
        let dx = poisoned(&mut dev, reference.len() * 4);
        let args = vec![ptr(g_dev), ptr(y_dev), ptr(off), ptr(dx)];
        let grid = [jag.batch() as u32, jag.max_len().div_ceil(32) as u32, 1];
        launch(&mut dev, "jagged_dense_bmm_bwd", arch, grid, args);
        let got = Dtype::F32.read(&dev, dx, reference.len());
        check("jagged_dense_bmm_bwd", arch, &got, &reference, TF32_TOL);
    }
}

#[test]
fn jagged_attention_bwd_bf16() {
    // One program per sequence (lengths up to the 32-row block), non-causal.
    let jag = Jagged::new(&[0, 1, 7, 32, 19, 0, 25]);
    let d = 32usize;
    let scale = 1.0 / (d as f32).sqrt();
    let sc = f64::from(scale);
    let mut rng = Rng::new(0xc0_001e);
    let bf = |v: &[f32]| Dtype::Bf16.round(v);
    let q = rng.vec(jag.total * d, -1.0, 1.0);
    let k = rng.vec(jag.total * d, -1.0, 1.0);
    let v = rng.vec(jag.total * d, -1.0, 1.0);
    let d_o = rng.vec(jag.total * d, -1.0, 1.0);
    let (qr, kr, vr, dor) = (bf(&q), bf(&k), bf(&v), bf(&d_o));
    // The forward's output, as the forward would store it (bf16).
    let mut o = vec![0f32; jag.total * d];
    let mut probs = Vec::new();
    for (_, start, len) in jag.seqs() {
        let mut p = vec![0f64; len * len];
        for i in 0..len {
            let s: Vec<f64> = (0..len)
                .map(|j| {
                    (0..d)
                        .map(|c| qr[(start + i) * d + c] * kr[(start + j) * d + c])
                        .sum::<f64>()
                        * sc
                })
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let l: f64 = s.iter().map(|x| (x - max).exp()).sum();
            for j in 0..len {
                p[i * len + j] = (s[j] - max).exp() / l;
            }
            for c in 0..d {
                o[(start + i) * d + c] = (0..len)
                    .map(|j| p[i * len + j] * vr[(start + j) * d + c])
                    .sum::<f64>() as f32;
            }
        }
        probs.push(p);
    }
    let or = bf(&o);
    let (mut ref_dq, mut ref_dk, mut ref_dv) = (
        vec![0f64; jag.total * d],
        vec![0f64; jag.total * d],
        vec![0f64; jag.total * d],
    );
    for ((_, start, len), p) in jag.seqs().zip(&probs) {
        let at = |i: usize, c: usize| (start + i) * d + c;
        let mut ds = vec![0f64; len * len];
        for i in 0..len {
            let delta: f64 = (0..d).map(|c| dor[at(i, c)] * or[at(i, c)]).sum();
            for j in 0..len {
                let dp: f64 = (0..d).map(|c| dor[at(i, c)] * vr[at(j, c)]).sum();
                ds[i * len + j] = p[i * len + j] * (dp - delta);
            }
        }
        for i in 0..len {
            for c in 0..d {
                ref_dv[at(i, c)] = (0..len).map(|j| p[j * len + i] * dor[at(j, c)]).sum();
                ref_dq[at(i, c)] = (0..len)
                    .map(|j| ds[i * len + j] * kr[at(j, c)])
                    .sum::<f64>()
                    * sc;
                ref_dk[at(i, c)] = (0..len)
                    .map(|j| ds[j * len + i] * qr[at(j, c)])
                    .sum::<f64>()
                    * sc;
            }
        }
    }
    for arch in archs("jagged_attention_bwd") {
        let mut dev = Device::new();
        let mut up = |v: &[f32]| ptr(Dtype::Bf16.upload(&mut dev, v).0);
        let (q_dev, k_dev, v_dev, o_dev, do_dev) = (up(&q), up(&k), up(&v), up(&o), up(&d_o));
        let off = jag.upload_offsets(&mut dev);
        let bytes = jag.total * d * 2;
        let (dq, dk, dv) = (
            poisoned(&mut dev, bytes),
            poisoned(&mut dev, bytes),
            poisoned(&mut dev, bytes),
        );
        let args = vec![
            KernelArg::F32(scale),
            q_dev,
            k_dev,
            v_dev,
            o_dev,
            do_dev,
            ptr(off),
            ptr(dq),
            ptr(dk),
            ptr(dv),
        ];
        launch(
            &mut dev,
            "jagged_attention_bwd",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        for (what, out, reference) in [
            ("dq", dq, &ref_dq),
            ("dk", dk, &ref_dk),
            ("dv", dv, &ref_dv),
        ] {
            let got = Dtype::Bf16.read(&dev, out, reference.len());
            check(
                &format!("jagged_attention_bwd {what}"),
                arch,
                &got,
                reference,
                BF16_TOL,
            );
        }
    }
}

#[test]
fn jagged_sum_i64_offsets_bf16() {
    jagged_sum_i64_offsets_bf16_on(&Jagged::new(&[0, 1, 16, 17, 40, 100, 0]));
}

fn jagged_sum_i64_offsets_bf16_on(jag: &Jagged) {
    // i64 offsets and max_len; sequences above max_len are truncated.
    let (d, max_len) = (64usize, 64usize);
    let mut rng = Rng::new(0xc0_001f);
    let x = rng.vec(jag.total * d, -1.0, 1.0);
    let xr = Dtype::Bf16.round(&x);
    let mut reference = vec![0f64; jag.batch() * d];
    for (b, start, len) in jag.seqs() {
        for r in start..start + len.min(max_len) {
            for c in 0..d {
                reference[b * d + c] += xr[r * d + c];
            }
        }
    }
    let offsets: Vec<u8> = jag
        .offsets
        .iter()
        .flat_map(|&o| i64::from(o).to_le_bytes())
        .collect();
    for arch in archs("jagged_sum_i64") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::Bf16.upload(&mut dev, &x);
        let off = dev.upload(&offsets);
        let out = poisoned(&mut dev, reference.len() * 2);
        let args = vec![
            ptr(x_dev),
            ptr(off),
            ptr(out),
            KernelArg::I64(max_len as i64),
        ];
        launch(
            &mut dev,
            "jagged_sum_i64",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::Bf16.read(&dev, out, reference.len());
        jag.assert_empty_rows_zero(&got, d, arch);
        check("jagged_sum_i64", arch, &got, &reference, BF16_TOL);
    }
}

// ------------------------------------------------------------------------- normalization

/// (mean, rstd) of each row of `x [rows, n]`.
fn row_stats(x: &[f64], rows: usize, n: usize, eps: f64) -> Vec<(f64, f64)> {
    (0..rows)
        .map(|r| {
            let row = &x[r * n..(r + 1) * n];
            let mean = row.iter().sum::<f64>() / n as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            (mean, 1.0 / (var + eps).sqrt())
        })
        .collect()
}

#[test]
fn layernorm_fwd_bf16() {
    let (rows, n, eps) = (5usize, 100usize, 1e-5f32);
    let mut rng = Rng::new(0xc0_000d);
    let x = rng.vec(rows * n, -2.0, 2.0);
    let w = rng.vec(n, 0.5, 1.5);
    let b = rng.vec(n, -0.5, 0.5);
    let (xr, wr, br) = (
        Dtype::Bf16.round(&x),
        Dtype::Bf16.round(&w),
        Dtype::Bf16.round(&b),
    );
    let stats = row_stats(&xr, rows, n, f64::from(eps));
    let mut ref_y = Vec::new();
    for (r, &(mean, rstd)) in stats.iter().enumerate() {
        ref_y.extend((0..n).map(|c| (xr[r * n + c] - mean) * rstd * wr[c] + br[c]));
    }
    let ref_mean: Vec<f64> = stats.iter().map(|s| s.0).collect();
    let ref_rstd: Vec<f64> = stats.iter().map(|s| s.1).collect();
    for arch in archs("layernorm_fwd") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::Bf16.upload(&mut dev, &x);
        let (w_dev, _) = Dtype::Bf16.upload(&mut dev, &w);
        let (b_dev, _) = Dtype::Bf16.upload(&mut dev, &b);
        let y = poisoned(&mut dev, rows * n * 2);
        let mean = poisoned(&mut dev, rows * 4);
        let rstd = poisoned(&mut dev, rows * 4);
        let args = vec![
            ptr(x_dev),
            ptr(w_dev),
            ptr(b_dev),
            ptr(y),
            ptr(mean),
            ptr(rstd),
            int(n),
            KernelArg::F32(eps),
        ];
        launch(&mut dev, "layernorm_fwd", arch, [rows as u32, 1, 1], args);
        let got = Dtype::Bf16.read(&dev, y, rows * n);
        check("layernorm_fwd y", arch, &got, &ref_y, BF16_TOL);
        // Mean and rstd are f32 math on exact bf16 inputs.
        let got = Dtype::F32.read(&dev, mean, rows);
        check("layernorm_fwd mean", arch, &got, &ref_mean, F32_TOL);
        let got = Dtype::F32.read(&dev, rstd, rows);
        check("layernorm_fwd rstd", arch, &got, &ref_rstd, F32_TOL);
    }
}

#[test]
fn layernorm_bwd_f32() {
    let (rows, n) = (6usize, 100usize);
    let mut rng = Rng::new(0xc0_000e);
    let x = rng.vec(rows * n, -2.0, 2.0);
    let w = rng.vec(n, 0.5, 1.5);
    let dy = rng.vec(rows * n, -1.0, 1.0);
    let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    // The saved statistics as the forward stores them (f32).
    let stats: Vec<(f32, f32)> = row_stats(&x64, rows, n, 1e-5)
        .iter()
        .map(|&(m, r)| (m as f32, r as f32))
        .collect();
    let f = |v: f32| f64::from(v);
    let mut ref_dx = vec![0f64; rows * n];
    let mut ref_dw = vec![0f64; n];
    let mut ref_db = vec![0f64; n];
    for (r, &(mean, rstd)) in stats.iter().enumerate() {
        let xhat: Vec<f64> = (0..n)
            .map(|c| (f(x[r * n + c]) - f(mean)) * f(rstd))
            .collect();
        let wdy: Vec<f64> = (0..n).map(|c| f(w[c]) * f(dy[r * n + c])).collect();
        let c1 = (0..n).map(|c| xhat[c] * wdy[c]).sum::<f64>() / n as f64;
        let c2 = wdy.iter().sum::<f64>() / n as f64;
        for c in 0..n {
            ref_dx[r * n + c] = (wdy[c] - (xhat[c] * c1 + c2)) * f(rstd);
            ref_dw[c] += f(dy[r * n + c]) * xhat[c];
            ref_db[c] += f(dy[r * n + c]);
        }
    }
    let mean: Vec<f32> = stats.iter().map(|s| s.0).collect();
    let rstd: Vec<f32> = stats.iter().map(|s| s.1).collect();
    for arch in archs("layernorm_bwd") {
        let mut dev = Device::new();
        let up = |dev: &mut Device, v: &[f32]| Dtype::F32.upload(dev, v).0;
        let (x_dev, w_dev, dy_dev) = (up(&mut dev, &x), up(&mut dev, &w), up(&mut dev, &dy));
        let (m_dev, r_dev) = (up(&mut dev, &mean), up(&mut dev, &rstd));
        let dx = poisoned(&mut dev, rows * n * 4);
        let (dw, db) = (dev.alloc(n * 4), dev.alloc(n * 4));
        let args = vec![
            ptr(x_dev),
            ptr(w_dev),
            ptr(dy_dev),
            ptr(m_dev),
            ptr(r_dev),
            ptr(dx),
            ptr(dw),
            ptr(db),
            int(n),
        ];
        launch(&mut dev, "layernorm_bwd", arch, [rows as u32, 1, 1], args);
        let got = Dtype::F32.read(&dev, dx, rows * n);
        check("layernorm_bwd dx", arch, &got, &ref_dx, F32_TOL);
        let got = Dtype::F32.read(&dev, dw, n);
        check("layernorm_bwd dw", arch, &got, &ref_dw, F32_TOL);
        let got = Dtype::F32.read(&dev, db, n);
        check("layernorm_bwd db", arch, &got, &ref_db, F32_TOL);
    }
}

#[test]
fn rmsnorm_fwd_f16() {
    let (rows, n, eps) = (6usize, 200usize, 1e-6f32);
    let mut rng = Rng::new(0xc0_000f);
    let x = rng.vec(rows * n, -2.0, 2.0);
    let w = rng.vec(n, 0.5, 1.5);
    let (xr, wr) = (Dtype::F16.round(&x), Dtype::F16.round(&w));
    let mut ref_y = vec![0f64; rows * n];
    let mut ref_rstd = vec![0f64; rows];
    for r in 0..rows {
        let ms = (0..n).map(|c| xr[r * n + c].powi(2)).sum::<f64>() / n as f64;
        ref_rstd[r] = 1.0 / (ms + f64::from(eps)).sqrt();
        for c in 0..n {
            ref_y[r * n + c] = xr[r * n + c] * ref_rstd[r] * wr[c];
        }
    }
    for arch in archs("rmsnorm_fwd") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F16.upload(&mut dev, &x);
        let (w_dev, _) = Dtype::F16.upload(&mut dev, &w);
        let y = poisoned(&mut dev, rows * n * 2);
        let rstd = poisoned(&mut dev, rows * 4);
        let args = vec![
            ptr(x_dev),
            ptr(w_dev),
            ptr(y),
            ptr(rstd),
            int(n),
            KernelArg::F32(eps),
        ];
        launch(&mut dev, "rmsnorm_fwd", arch, [rows as u32, 1, 1], args);
        let got = Dtype::F16.read(&dev, y, rows * n);
        check("rmsnorm_fwd y", arch, &got, &ref_y, F16_TOL);
        let got = Dtype::F32.read(&dev, rstd, rows);
        check("rmsnorm_fwd rstd", arch, &got, &ref_rstd, F32_TOL);
    }
}

#[test]
fn rmsnorm_bwd_f16() {
    let (rows, n) = (6usize, 200usize);
    let mut rng = Rng::new(0xc0_0010);
    let x = rng.vec(rows * n, -2.0, 2.0);
    let w = rng.vec(n, 0.5, 1.5);
    let dy = rng.vec(rows * n, -1.0, 1.0);
    let (xr, wr, dyr) = (
        Dtype::F16.round(&x),
        Dtype::F16.round(&w),
        Dtype::F16.round(&dy),
    );
    let rstd: Vec<f32> = (0..rows)
        .map(|r| {
            let ms = (0..n).map(|c| xr[r * n + c].powi(2)).sum::<f64>() / n as f64;
            (1.0 / (ms + 1e-6).sqrt()) as f32
        })
        .collect();
    let mut ref_dx = vec![0f64; rows * n];
    let mut ref_dw = vec![0f64; n];
    for (r, &rs) in rstd.iter().enumerate() {
        let rs = f64::from(rs);
        let at = |c: usize| r * n + c;
        let mean = (0..n).map(|c| xr[at(c)] * wr[c] * dyr[at(c)]).sum::<f64>() / n as f64;
        for c in 0..n {
            ref_dx[at(c)] = rs * (wr[c] * dyr[at(c)] - xr[at(c)] * rs * rs * mean);
            ref_dw[c] += dyr[at(c)] * xr[at(c)] * rs;
        }
    }
    for arch in archs("rmsnorm_bwd") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F16.upload(&mut dev, &x);
        let (w_dev, _) = Dtype::F16.upload(&mut dev, &w);
        let (dy_dev, _) = Dtype::F16.upload(&mut dev, &dy);
        let (r_dev, _) = Dtype::F32.upload(&mut dev, &rstd);
        let dx = poisoned(&mut dev, rows * n * 2);
        let dw = dev.alloc(n * 4);
        let args = vec![
            ptr(x_dev),
            ptr(w_dev),
            ptr(dy_dev),
            ptr(r_dev),
            ptr(dx),
            ptr(dw),
            int(n),
        ];
        launch(&mut dev, "rmsnorm_bwd", arch, [rows as u32, 1, 1], args);
        let got = Dtype::F16.read(&dev, dx, rows * n);
        check("rmsnorm_bwd dx", arch, &got, &ref_dx, F16_TOL);
        let got = Dtype::F32.read(&dev, dw, n);
        check("rmsnorm_bwd dw", arch, &got, &ref_dw, F32_TOL);
    }
}

// ------------------------------------------------------------------------- embeddings, losses

/// Bags of indices into a table of `vocab` rows: lengths include empty bags.
fn bags(rng: &mut Rng, vocab: usize) -> (Jagged, Vec<i32>, Vec<f32>) {
    let jag = Jagged::new(&[0, 1, 8, 13, 0, 30, 5]);
    let indices = (0..jag.total)
        .map(|_| (rng.next_u64() % vocab as u64) as i32)
        .collect();
    let weights = rng.vec(jag.total, 0.0, 2.0);
    (jag, indices, weights)
}

#[test]
fn embedding_bag_f32_with_bool_flags() {
    let (vocab, d) = (50usize, 32usize);
    let mut rng = Rng::new(0xc0_0011);
    let table = rng.vec(vocab * d, -1.0, 1.0);
    let (jag, indices, weights) = bags(&mut rng, vocab);
    for (use_weights, mean) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut reference = vec![0f64; jag.batch() * d];
        for (b, start, len) in jag.seqs() {
            for i in start..start + len {
                let wt = if use_weights {
                    f64::from(weights[i])
                } else {
                    1.0
                };
                for c in 0..d {
                    let v = f64::from(table[indices[i] as usize * d + c]) * wt;
                    reference[b * d + c] += if mean { v / len as f64 } else { v };
                }
            }
        }
        for arch in archs("embedding_bag") {
            let mut dev = Device::new();
            let (t_dev, _) = Dtype::F32.upload(&mut dev, &table);
            let i_dev = dev.upload(&i32_bytes(&indices));
            let off = jag.upload_offsets(&mut dev);
            let (w_dev, _) = Dtype::F32.upload(&mut dev, &weights);
            let out = poisoned(&mut dev, reference.len() * 4);
            let args = vec![
                ptr(t_dev),
                ptr(i_dev),
                ptr(off),
                ptr(w_dev),
                ptr(out),
                flag(use_weights),
                flag(mean),
            ];
            launch(
                &mut dev,
                "embedding_bag",
                arch,
                [jag.batch() as u32, 1, 1],
                args,
            );
            let got = Dtype::F32.read(&dev, out, reference.len());
            let what = format!("embedding_bag use_weights={use_weights} mean={mean}");
            check(&what, arch, &got, &reference, F32_TOL);
        }
    }
}

#[test]
fn embedding_bag_bwd_f32() {
    for arch in archs("embedding_bag_bwd") {
        embedding_bag_bwd_f32_on(arch);
    }
}

/// Regression: sm_90a's vector atomics (`atom.global.add.v4.f32`), which the
/// emulator's parser rejected, run like the scalar ones.
#[test]
fn embedding_bag_bwd_f32_sm_90a_vector_atomics() {
    embedding_bag_bwd_f32_on("sm_90a");
}

fn embedding_bag_bwd_f32_on(arch: &str) {
    // Scatter-add with repeated indices (atomic contention) into a 20-row table.
    let (vocab, d) = (20usize, 32usize);
    let mut rng = Rng::new(0xc0_0012);
    let (jag, indices, weights) = bags(&mut rng, vocab);
    let g = rng.vec(jag.batch() * d, -1.0, 1.0);
    let mut reference = vec![0f64; vocab * d];
    for (b, start, len) in jag.seqs() {
        for i in start..start + len {
            for c in 0..d {
                reference[indices[i] as usize * d + c] +=
                    f64::from(weights[i]) * f64::from(g[b * d + c]);
            }
        }
    }
    {
        let mut dev = Device::new();
        let (g_dev, _) = Dtype::F32.upload(&mut dev, &g);
        let i_dev = dev.upload(&i32_bytes(&indices));
        let off = jag.upload_offsets(&mut dev);
        let (w_dev, _) = Dtype::F32.upload(&mut dev, &weights);
        let dtable = dev.alloc(vocab * d * 4);
        let args = vec![ptr(g_dev), ptr(i_dev), ptr(off), ptr(w_dev), ptr(dtable)];
        launch(
            &mut dev,
            "embedding_bag_bwd",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, dtable, reference.len());
        check("embedding_bag_bwd", arch, &got, &reference, F32_TOL);
    }
}

#[test]
fn embedding_bag_bwd_f16() {
    for arch in archs("embedding_bag_bwd_f16") {
        embedding_bag_bwd_f16_on(arch);
    }
}

/// Regression: sm_90a's vector atomics (`atom.global.add.noftz.v4.f16`), which the
/// emulator's parser rejected, run like the scalar ones.
#[test]
fn embedding_bag_bwd_f16_sm_90a_vector_atomics() {
    embedding_bag_bwd_f16_on("sm_90a");
}

/// Unweighted scatter-add of f16 gradients into an f16 table with f16 atomics
/// (`atom.add.noftz.f16x2` on sm_80): every add rounds to f16.
fn embedding_bag_bwd_f16_on(arch: &str) {
    let (vocab, d) = (40usize, 32usize);
    let mut rng = Rng::new(0xc0_0024);
    let (jag, indices, _) = bags(&mut rng, vocab);
    let g = rng.vec(jag.batch() * d, -1.0, 1.0);
    let gr = Dtype::F16.round(&g);
    let mut reference = vec![0f64; vocab * d];
    for (b, start, len) in jag.seqs() {
        for i in start..start + len {
            for c in 0..d {
                reference[indices[i] as usize * d + c] += gr[b * d + c];
            }
        }
    }
    let mut dev = Device::new();
    let (g_dev, _) = Dtype::F16.upload(&mut dev, &g);
    let i_dev = dev.upload(&i32_bytes(&indices));
    let off = jag.upload_offsets(&mut dev);
    let dtable = dev.alloc(vocab * d * 2);
    let args = vec![ptr(g_dev), ptr(i_dev), ptr(off), ptr(dtable)];
    launch(
        &mut dev,
        "embedding_bag_bwd_f16",
        arch,
        [jag.batch() as u32, 1, 1],
        args,
    );
    let got = Dtype::F16.read(&dev, dtable, reference.len());
    check("embedding_bag_bwd_f16", arch, &got, &reference, F16_TOL);
}

const IGNORE_INDEX: i32 = -100;

/// Logits [rows, vocab] and labels, two of them ignored.
fn ce_inputs(rng: &mut Rng, rows: usize, vocab: usize) -> (Vec<f32>, Vec<i32>) {
    let logits = rng.vec(rows * vocab, -5.0, 5.0);
    let labels = (0..rows)
        .map(|r| {
            if r % 3 == 1 {
                IGNORE_INDEX
            } else {
                (rng.next_u64() % vocab as u64) as i32
            }
        })
        .collect();
    (logits, labels)
}

fn logsumexp(row: &[f64]) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

#[test]
fn cross_entropy_fwd_f32() {
    // 300 classes: three 128-wide chunks, the last one partial.
    let (rows, vocab) = (6usize, 300usize);
    let mut rng = Rng::new(0xc0_0013);
    let (logits, labels) = ce_inputs(&mut rng, rows, vocab);
    let l64 = Dtype::F32.round(&logits);
    let ref_lse: Vec<f64> = (0..rows)
        .map(|r| logsumexp(&l64[r * vocab..(r + 1) * vocab]))
        .collect();
    let ref_loss: Vec<f64> = (0..rows)
        .map(|r| match labels[r] {
            IGNORE_INDEX => 0.0,
            l => ref_lse[r] - l64[r * vocab + l as usize],
        })
        .collect();
    for arch in archs("cross_entropy_fwd") {
        let mut dev = Device::new();
        let (l_dev, _) = Dtype::F32.upload(&mut dev, &logits);
        let lab = dev.upload(&i32_bytes(&labels));
        let loss = poisoned(&mut dev, rows * 4);
        let lse = poisoned(&mut dev, rows * 4);
        let args = vec![
            ptr(l_dev),
            ptr(lab),
            ptr(loss),
            ptr(lse),
            int(vocab),
            KernelArg::I32(IGNORE_INDEX),
        ];
        launch(
            &mut dev,
            "cross_entropy_fwd",
            arch,
            [rows as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, loss, rows);
        for r in (0..rows).filter(|r| labels[*r] == IGNORE_INDEX) {
            assert_eq!(got[r], 0.0, "ignored row {r} ({arch})");
        }
        check("cross_entropy_fwd loss", arch, &got, &ref_loss, F32_TOL);
        let got = Dtype::F32.read(&dev, lse, rows);
        check("cross_entropy_fwd lse", arch, &got, &ref_lse, F32_TOL);
    }
}

#[test]
fn cross_entropy_bwd_bf16() {
    let (rows, vocab) = (6usize, 300usize);
    let mut rng = Rng::new(0xc0_0014);
    let (logits, labels) = ce_inputs(&mut rng, rows, vocab);
    let lr = Dtype::Bf16.round(&logits);
    let lse: Vec<f32> = (0..rows)
        .map(|r| logsumexp(&lr[r * vocab..(r + 1) * vocab]) as f32)
        .collect();
    let dloss = rng.vec(rows, 0.5, 2.0);
    let mut reference = vec![0f64; rows * vocab];
    for r in (0..rows).filter(|r| labels[*r] != IGNORE_INDEX) {
        for c in 0..vocab {
            let p = (lr[r * vocab + c] - f64::from(lse[r])).exp();
            let onehot = if c as i32 == labels[r] { 1.0 } else { 0.0 };
            reference[r * vocab + c] = (p - onehot) * f64::from(dloss[r]);
        }
    }
    for arch in archs("cross_entropy_bwd") {
        let mut dev = Device::new();
        let (l_dev, _) = Dtype::Bf16.upload(&mut dev, &logits);
        let lab = dev.upload(&i32_bytes(&labels));
        let (lse_dev, _) = Dtype::F32.upload(&mut dev, &lse);
        let (g_dev, _) = Dtype::F32.upload(&mut dev, &dloss);
        let out = poisoned(&mut dev, rows * vocab * 2);
        let args = vec![
            ptr(l_dev),
            ptr(lab),
            ptr(lse_dev),
            ptr(g_dev),
            ptr(out),
            int(vocab),
            KernelArg::I32(IGNORE_INDEX),
        ];
        launch(
            &mut dev,
            "cross_entropy_bwd",
            arch,
            [rows as u32, 1, 1],
            args,
        );
        let got = Dtype::Bf16.read(&dev, out, rows * vocab);
        check("cross_entropy_bwd", arch, &got, &reference, BF16_TOL);
    }
}

// ------------------------------------------------------------------------- elementwise

/// Triton's `tl.rand(seed, offset)` for an i32 seed >= 0 and offset: Philox 4x32-10 on
/// (offset, 0, 0, 0) with key (seed, 0), the first word mapped to [0, 1) in f32.
fn triton_rand(seed: u32, offset: u32) -> f32 {
    let umulhi = |a: u32, b: u32| ((u64::from(a) * u64::from(b)) >> 32) as u32;
    let (mut c0, mut c1, mut c2, mut c3) = (offset, 0u32, 0u32, 0u32);
    let (mut k0, mut k1) = (seed, 0u32);
    for _ in 0..10 {
        let (a, b) = (0xD251_1F53u32, 0xCD9E_8D57u32);
        let (p0, p2) = (c0, c2);
        c0 = umulhi(b, p2) ^ c1 ^ k0;
        c2 = umulhi(a, p0) ^ c3 ^ k1;
        c1 = b.wrapping_mul(p2);
        c3 = a.wrapping_mul(p0);
        k0 = k0.wrapping_add(0x9E37_79B9);
        k1 = k1.wrapping_add(0xBB67_AE85);
    }
    let x = c0 as i32;
    let x = if x < 0 { !x } else { x };
    x as f32 * 4.656_612_7e-10_f32
}

const DROPOUT_SEED: i32 = 1234;
const DROPOUT_P: f32 = 0.3;

/// The dropout reference `x * keep / (1 - p)` and the number of kept elements.
fn dropout_reference(x: &[f64]) -> (Vec<f64>, usize) {
    let scale = 1.0 / (1.0 - f64::from(DROPOUT_P));
    let keep: Vec<bool> = (0..x.len())
        .map(|i| triton_rand(DROPOUT_SEED as u32, i as u32) > DROPOUT_P)
        .collect();
    let kept = keep.iter().filter(|&&k| k).count();
    let y = x
        .iter()
        .zip(&keep)
        .map(|(&v, &k)| if k { v * scale } else { 0.0 })
        .collect();
    (y, kept)
}

#[test]
fn dropout_fwd_f32_with_seed_scalar() {
    let n = 1000usize;
    let mut rng = Rng::new(0xc0_0015);
    let x = rng.vec(n, 0.5, 1.5); // nonzero, so a dropped element is told from a kept one
    let (reference, kept) = dropout_reference(&Dtype::F32.round(&x));
    assert!((600..800).contains(&kept), "kept {kept} of {n}");
    for arch in archs("dropout_fwd") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F32.upload(&mut dev, &x);
        let out = poisoned(&mut dev, n * 4);
        let args = vec![
            KernelArg::I32(DROPOUT_SEED),
            KernelArg::F32(DROPOUT_P),
            ptr(x_dev),
            ptr(out),
            int(n),
        ];
        launch(
            &mut dev,
            "dropout_fwd",
            arch,
            [n.div_ceil(256) as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, out, n);
        for (i, (&g, &r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(g == 0.0, r == 0.0, "dropout mask at {i} ({arch})");
        }
        check("dropout_fwd", arch, &got, &reference, F32_TOL);
    }
}

#[test]
fn dropout_bwd_f16_regenerates_the_mask() {
    let n = 1000usize;
    let mut rng = Rng::new(0xc0_0016);
    let dy = rng.vec(n, 0.5, 1.5);
    let (reference, _) = dropout_reference(&Dtype::F16.round(&dy));
    for arch in archs("dropout_bwd") {
        let mut dev = Device::new();
        let (dy_dev, _) = Dtype::F16.upload(&mut dev, &dy);
        let dx = poisoned(&mut dev, n * 2);
        let args = vec![
            KernelArg::I32(DROPOUT_SEED),
            KernelArg::F32(DROPOUT_P),
            ptr(dy_dev),
            ptr(dx),
            int(n),
        ];
        launch(
            &mut dev,
            "dropout_bwd",
            arch,
            [n.div_ceil(256) as u32, 1, 1],
            args,
        );
        let got = Dtype::F16.read(&dev, dx, n);
        for (i, (&g, &r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(g == 0.0, r == 0.0, "dropout mask at {i} ({arch})");
        }
        check("dropout_bwd", arch, &got, &reference, F16_TOL);
    }
}

/// Runs the elementwise kernel `name` (blocks of `block`) on `inputs` of dtype `dt`
/// (plus the trailing scalar `extra` arguments after `n`) and returns its output.
fn elementwise(
    name: &str,
    arch: &str,
    dt: Dtype,
    block: usize,
    inputs: &[&[f32]],
    extra: &[KernelArg],
) -> Vec<f32> {
    let n = inputs[0].len();
    let mut dev = Device::new();
    let mut args: Vec<KernelArg> = inputs
        .iter()
        .map(|v| ptr(dt.upload(&mut dev, v).0))
        .collect();
    let out = poisoned(&mut dev, n * dt.size());
    args.push(ptr(out));
    args.push(int(n));
    args.extend_from_slice(extra);
    launch(&mut dev, name, arch, [n.div_ceil(block) as u32, 1, 1], args);
    dt.read(&dev, out, n)
}

#[test]
fn gelu_fwd_bf16_erf_and_tanh() {
    let n = 1000usize;
    let mut rng = Rng::new(0xc0_0017);
    let x = rng.vec(n, -3.5, 3.5);
    let xr = Dtype::Bf16.round(&x);
    for approximate in [false, true] {
        let reference: Vec<f64> = xr
            .iter()
            .map(|&v| {
                if approximate {
                    let inner = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3));
                    0.5 * v * (1.0 + inner.tanh())
                } else {
                    0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2))
                }
            })
            .collect();
        for arch in archs("gelu_fwd") {
            let got = elementwise(
                "gelu_fwd",
                arch,
                Dtype::Bf16,
                256,
                &[&x],
                &[flag(approximate)],
            );
            let what = format!("gelu_fwd approximate={approximate}");
            check(&what, arch, &got, &reference, BF16_TOL);
        }
    }
}

#[test]
fn gelu_bwd_bf16() {
    let n = 1000usize;
    let mut rng = Rng::new(0xc0_0018);
    let x = rng.vec(n, -3.5, 3.5);
    let dy = rng.vec(n, -1.0, 1.0);
    let (xr, dyr) = (Dtype::Bf16.round(&x), Dtype::Bf16.round(&dy));
    let reference: Vec<f64> = xr
        .iter()
        .zip(&dyr)
        .map(|(&v, &g)| {
            let cdf = 0.5 * (1.0 + erf(v / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            g * (cdf + v * pdf)
        })
        .collect();
    for arch in archs("gelu_bwd") {
        let got = elementwise("gelu_bwd", arch, Dtype::Bf16, 256, &[&x, &dy], &[]);
        check("gelu_bwd", arch, &got, &reference, BF16_TOL);
    }
}

#[test]
fn silu_fwd_f16() {
    let n = 1500usize;
    let mut rng = Rng::new(0xc0_0019);
    let x = rng.vec(n, -6.0, 6.0);
    let reference: Vec<f64> = Dtype::F16
        .round(&x)
        .iter()
        .map(|&v| v * sigmoid(v))
        .collect();
    for arch in archs("silu_fwd") {
        let got = elementwise("silu_fwd", arch, Dtype::F16, 512, &[&x], &[]);
        check("silu_fwd", arch, &got, &reference, F16_TOL);
    }
}

#[test]
fn silu_bwd_f16() {
    let n = 1500usize;
    let mut rng = Rng::new(0xc0_001a);
    let x = rng.vec(n, -6.0, 6.0);
    let dy = rng.vec(n, -1.0, 1.0);
    let (xr, dyr) = (Dtype::F16.round(&x), Dtype::F16.round(&dy));
    let reference: Vec<f64> = xr
        .iter()
        .zip(&dyr)
        .map(|(&v, &g)| {
            let s = sigmoid(v);
            g * s * (1.0 + v * (1.0 - s))
        })
        .collect();
    for arch in archs("silu_bwd") {
        let got = elementwise("silu_bwd", arch, Dtype::F16, 512, &[&x, &dy], &[]);
        check("silu_bwd", arch, &got, &reference, F16_TOL);
    }
}

// ------------------------------------------------------------------------- scatter, compaction

#[test]
fn segment_sum_atomic_f32() {
    for arch in archs("segment_sum_atomic") {
        segment_sum_atomic_f32_on(arch);
    }
}

/// Regression: sm_90a's vector atomics (`atom.global.add.v4.f32`), which the
/// emulator's parser rejected, run like the scalar ones.
#[test]
fn segment_sum_atomic_f32_sm_90a_vector_atomics() {
    segment_sum_atomic_f32_on("sm_90a");
}

fn segment_sum_atomic_f32_on(arch: &str) {
    // 300 rows in blocks of 64 scatter into 7 segments (one of them never hit).
    let (n, d, segments) = (300usize, 16usize, 7usize);
    let mut rng = Rng::new(0xc0_001b);
    let x = rng.vec(n * d, -1.0, 1.0);
    let seg: Vec<i32> = (0..n)
        .map(|_| (rng.next_u64() % (segments as u64 - 1)) as i32)
        .collect();
    let mut reference = vec![0f64; segments * d];
    for i in 0..n {
        for c in 0..d {
            reference[seg[i] as usize * d + c] += f64::from(x[i * d + c]);
        }
    }
    {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F32.upload(&mut dev, &x);
        let s_dev = dev.upload(&i32_bytes(&seg));
        let out = dev.alloc(segments * d * 4);
        let args = vec![ptr(x_dev), ptr(s_dev), ptr(out), int(n)];
        launch(
            &mut dev,
            "segment_sum_atomic",
            arch,
            [n.div_ceil(64) as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, out, reference.len());
        check("segment_sum_atomic", arch, &got, &reference, F32_TOL);
    }
}

#[test]
fn masked_select_f32_with_invert_flag() {
    // 1000 elements in 256-wide chunks; any nonzero flag byte counts as set.
    let n = 1000usize;
    let mut rng = Rng::new(0xc0_001c);
    let x = rng.vec(n, -1.0, 1.0);
    let flags: Vec<u8> = (0..n).map(|_| (rng.next_u64() % 3) as u8).collect();
    for invert in [false, true] {
        let expected: Vec<f32> = (0..n)
            .filter(|&i| (flags[i] != 0) != invert)
            .map(|i| x[i])
            .collect();
        for arch in archs("masked_select") {
            let mut dev = Device::new();
            let (x_dev, _) = Dtype::F32.upload(&mut dev, &x);
            let f_dev = dev.upload(&flags);
            let out = poisoned(&mut dev, n * 4);
            let count = poisoned(&mut dev, 4);
            let args = vec![
                ptr(x_dev),
                ptr(f_dev),
                ptr(out),
                ptr(count),
                int(n),
                flag(invert),
            ];
            launch(&mut dev, "masked_select", arch, [1, 1, 1], args);
            let got_count = i32s(&dev.read(count, 4).expect("count"))[0];
            assert_eq!(
                got_count as usize,
                expected.len(),
                "count invert={invert} ({arch})"
            );
            let got = Dtype::F32.read(&dev, out, n);
            assert_eq!(
                &got[..expected.len()],
                &expected[..],
                "invert={invert} ({arch})"
            );
            assert!(
                got[expected.len()..]
                    .iter()
                    .all(|v| v.to_bits() == u32::MAX),
                "masked_select wrote past the count (invert={invert}, {arch})"
            );
        }
    }
}

#[test]
fn jagged_max_bwd_bf16() {
    jagged_max_bwd_bf16_on(&Jagged::new(&[0, 1, 15, 16, 33, 0, 7]));
}

fn jagged_max_bwd_bf16_on(jag: &Jagged) {
    // The gradient goes to the first row holding each column's max (running argmax over
    // 16-row chunks).
    let d = 32;
    let mut rng = Rng::new(0xc0_0020);
    let x = rng.vec(jag.total * d, -3.0, 3.0);
    let g = rng.vec(jag.batch() * d, 0.5, 1.5);
    let (xr, gr) = (Dtype::Bf16.round(&x), Dtype::Bf16.round(&g));
    let mut reference = vec![0f64; jag.total * d];
    for (b, start, len) in jag.seqs() {
        for c in 0..d {
            let mut arg = None::<usize>;
            for r in start..start + len {
                if arg.is_none_or(|a| xr[r * d + c] > xr[a * d + c]) {
                    arg = Some(r);
                }
            }
            if let Some(a) = arg {
                reference[a * d + c] = gr[b * d + c];
            }
        }
    }
    for arch in archs("jagged_max_bwd") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::Bf16.upload(&mut dev, &x);
        let (g_dev, _) = Dtype::Bf16.upload(&mut dev, &g);
        let off = jag.upload_offsets(&mut dev);
        let dx = poisoned(&mut dev, reference.len() * 2);
        let args = vec![ptr(x_dev), ptr(g_dev), ptr(off), ptr(dx)];
        launch(
            &mut dev,
            "jagged_max_bwd",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::Bf16.read(&dev, dx, reference.len());
        for (i, (&o, &r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(f64::from(o), r, "jagged_max_bwd ({arch}) element {i}");
        }
    }
}

#[test]
fn jagged_sort_desc_f32() {
    jagged_sort_desc_f32_on(&Jagged::new(&[0, 1, 7, 64, 33, 0, 50]));
}

fn jagged_sort_desc_f32_on(jag: &Jagged) {
    let mut rng = Rng::new(0xc0_0021);
    let scores = rng.vec(jag.total, -10.0, 10.0);
    let mut reference = scores.clone();
    for (_, start, len) in jag.seqs() {
        reference[start..start + len].sort_by(|a, b| b.total_cmp(a));
    }
    for arch in archs("jagged_sort_desc") {
        let mut dev = Device::new();
        let (s_dev, _) = Dtype::F32.upload(&mut dev, &scores);
        let off = jag.upload_offsets(&mut dev);
        let out = poisoned(&mut dev, jag.total * 4);
        let args = vec![ptr(s_dev), ptr(off), ptr(out)];
        launch(
            &mut dev,
            "jagged_sort_desc",
            arch,
            [jag.batch() as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, out, jag.total);
        assert_eq!(got, reference, "jagged_sort_desc ({arch})");
    }
}

#[test]
fn histogram_bins_counts_exactly() {
    // tl.histogram per 256-wide block, added to 16 global bins with integer atomics.
    let (n, bins) = (1000usize, 16usize);
    let mut rng = Rng::new(0xc0_0022);
    let x = rng.vec(n, 0.0, 1.0);
    let mut expected = vec![0i32; bins];
    for &v in &x {
        expected[(v * bins as f32) as usize] += 1;
    }
    for arch in archs("histogram_bins") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F32.upload(&mut dev, &x);
        let bins_dev = dev.alloc(bins * 4);
        let args = vec![ptr(x_dev), ptr(bins_dev), int(n)];
        launch(
            &mut dev,
            "histogram_bins",
            arch,
            [n.div_ceil(256) as u32, 1, 1],
            args,
        );
        let got = i32s(&dev.read(bins_dev, bins * 4).expect("bins"));
        assert_eq!(got, expected, "histogram_bins ({arch})");
    }
}

#[test]
fn segment_max_atomic_f32() {
    // f32 atomic max (atom.max.s32 / atom.min.u32 on the bits) over mixed-sign values;
    // segment 6 is never hit and keeps its initial value.
    let (n, d, segments, init) = (300usize, 16usize, 7usize, -100.0f32);
    let mut rng = Rng::new(0xc0_0023);
    let x = rng.vec(n * d, -1.0, 1.0);
    let seg: Vec<i32> = (0..n)
        .map(|_| (rng.next_u64() % (segments as u64 - 1)) as i32)
        .collect();
    let mut expected = vec![init; segments * d];
    for i in 0..n {
        for c in 0..d {
            let e = &mut expected[seg[i] as usize * d + c];
            *e = e.max(x[i * d + c]);
        }
    }
    for arch in archs("segment_max_atomic") {
        let mut dev = Device::new();
        let (x_dev, _) = Dtype::F32.upload(&mut dev, &x);
        let s_dev = dev.upload(&i32_bytes(&seg));
        let (out, _) = Dtype::F32.upload(&mut dev, &vec![init; segments * d]);
        let args = vec![ptr(x_dev), ptr(s_dev), ptr(out), int(n)];
        launch(
            &mut dev,
            "segment_max_atomic",
            arch,
            [n.div_ceil(64) as u32, 1, 1],
            args,
        );
        let got = Dtype::F32.read(&dev, out, expected.len());
        assert_eq!(got, expected, "segment_max_atomic ({arch})");
    }
}

//! `jagc emu` end to end: the built binary runs the Triton softmax fixture on `.npy`
//! files and its output is checked against an f64 softmax; bad arguments, unknown
//! kernels and checker failures exit non-zero with a message naming the culprit.

use jagged::cli::npy::{self, NpyArray, NpyDtype};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROWS: usize = 3;
const COLS: usize = 256;

/// A fresh scratch directory for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jagc-emu-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn softmax_ptx() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("emulator/fixtures/softmax_rows.ptx")
}

fn jagc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jagc"))
        .args(args)
        .output()
        .expect("run jagc")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes ROWS x COLS f32 inputs to `dir/x.npy` and returns them.
fn write_input(dir: &Path) -> Vec<f32> {
    let x: Vec<f32> = (0..ROWS * COLS)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 16.0)
        .collect();
    let array = NpyArray {
        dtype: NpyDtype::F32,
        shape: vec![ROWS, COLS],
        data: x.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    npy::write(dir.join("x.npy"), &array).expect("write x.npy");
    x
}

/// The softmax fixture's arguments after its two buffers: n_cols, both strides, and
/// Triton's two scratch pointers.
const SOFTMAX_SCALARS: [&str; 10] = [
    "--arg", "i32:256", "--arg", "i32:256", "--arg", "i32:256", "--arg", "u64:0", "--arg", "u64:0",
];

/// Runs the softmax fixture's kernel `kernel` with the buffer arguments `x` and `y`.
fn run_softmax(x: &str, y: &str, kernel: &str) -> Output {
    let ptx = softmax_ptx();
    let mut args = vec![
        "emu",
        ptx.to_str().expect("utf-8 path"),
        "--kernel",
        kernel,
        "--grid",
        "3",
        "--block",
        "128",
        "--shared",
        "16",
        "--arg",
        x,
        "--arg",
        y,
    ];
    args.extend(SOFTMAX_SCALARS);
    jagc(&args)
}

#[test]
fn runs_triton_softmax_on_npy_files() {
    let dir = temp_dir("softmax");
    let x = write_input(&dir);
    let x_spec = format!("in:{}", dir.join("x.npy").display());
    let y_path = dir.join("y.npy");
    let y_spec = format!("out:{}:f32:{}", y_path.display(), ROWS * COLS);
    let out = run_softmax(&x_spec, &y_spec, "softmax_rows");
    assert!(out.status.success(), "jagc emu failed: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("warp instructions"), "{stdout}");

    let y = npy::read(&y_path).expect("read y.npy");
    assert_eq!(
        (y.dtype, y.shape.as_slice()),
        (NpyDtype::F32, &[ROWS * COLS][..])
    );
    let y: Vec<f64> = y
        .data
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let mut diff = 0.0;
    let mut norm = 0.0;
    for r in 0..ROWS {
        let row = &x[r * COLS..(r + 1) * COLS];
        let max = row
            .iter()
            .map(|&v| f64::from(v))
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for (c, &v) in row.iter().enumerate() {
            let want = (f64::from(v) - max).exp() / sum;
            diff += (y[r * COLS + c] - want).powi(2);
            norm += want * want;
        }
    }
    let err = (diff / norm).sqrt();
    assert!(err <= 1e-5, "relative error {err}");
}

#[test]
fn inout_buffer_keeps_dtype_and_shape() {
    // The output buffer starts as a copy of x.npy ([ROWS, COLS]) and is overwritten by
    // the kernel; the file written keeps the input's dtype and shape.
    let dir = temp_dir("inout");
    write_input(&dir);
    let x_path = dir.join("x.npy");
    let y_path = dir.join("y_inout.npy");
    let x_spec = format!("in:{}", x_path.display());
    let y_spec = format!("inout:{}:{}", x_path.display(), y_path.display());
    let out = run_softmax(&x_spec, &y_spec, "softmax_rows");
    assert!(out.status.success(), "jagc emu failed: {}", stderr(&out));
    let y = npy::read(&y_path).expect("read output");
    assert_eq!(
        (y.dtype, y.shape.as_slice()),
        (NpyDtype::F32, &[ROWS, COLS][..])
    );
    for row in y.data.chunks_exact(4 * COLS) {
        let sum: f32 = row
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .sum();
        assert!((sum - 1.0).abs() < 1e-4, "softmax row sums to {sum}");
    }
}

#[test]
fn bad_arg_spec_is_named() {
    let ptx = softmax_ptx();
    let out = jagc(&[
        "emu",
        ptx.to_str().expect("utf-8 path"),
        "--grid",
        "1",
        "--block",
        "128",
        "--arg",
        "f8:1.0",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("f8:1.0"), "{}", stderr(&out));
}

#[test]
fn unknown_kernel_lists_the_kernels() {
    let dir = temp_dir("unknown");
    write_input(&dir);
    let x_spec = format!("in:{}", dir.join("x.npy").display());
    let y_spec = format!("out:{}:f32:768", dir.join("y.npy").display());
    let out = run_softmax(&x_spec, &y_spec, "no_such_kernel");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no_such_kernel") && err.contains("softmax_rows"),
        "{err}"
    );
}

#[test]
fn missing_input_file_is_named() {
    let dir = temp_dir("missing");
    let x_spec = format!("in:{}", dir.join("absent.npy").display());
    let y_spec = format!("out:{}:f32:768", dir.join("y.npy").display());
    let out = run_softmax(&x_spec, &y_spec, "softmax_rows");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("absent.npy") && err.contains("--arg 1"),
        "{err}"
    );
}

#[test]
fn checker_failure_exits_non_zero_with_the_report() {
    // Every thread stores one float at out[tid + 1]: the last one is past the buffer.
    let dir = temp_dir("oob");
    let ptx_path = dir.join("oob.ptx");
    std::fs::write(
        &ptx_path,
        ".version 8.0\n.target sm_80\n.address_size 64\n\n\
         .visible .entry store_next(.param .u64 out)\n{\n\
         \x20   .reg .b32 %r<2>;\n    .reg .f32 %f<1>;\n    .reg .b64 %rd<4>;\n\
         \x20   ld.param.u64 %rd0, [out];\n    mov.u32 %r0, %tid.x;\n\
         \x20   mul.wide.u32 %rd1, %r0, 4;\n    add.s64 %rd2, %rd0, %rd1;\n\
         \x20   mov.f32 %f0, 0f3F800000;\n    st.global.f32 [%rd2+4], %f0;\n    ret;\n}\n",
    )
    .expect("write ptx");
    let y_spec = format!("out:{}:f32:32", dir.join("y.npy").display());
    let out = jagc(&[
        "emu",
        ptx_path.to_str().expect("utf-8 path"),
        "--grid",
        "1",
        "--block",
        "32",
        "--arg",
        &y_spec,
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("out-of-bounds") && err.contains("store_next"),
        "{err}"
    );
    assert!(
        !dir.join("y.npy").exists(),
        "no output is written after a failed run"
    );
}

#[test]
fn runs_triton_bf16_matmul_with_u16_npy_inputs() {
    // bf16 inputs travel as uint16 .npy files; a 2-D grid given as X,Y.
    let dir = temp_dir("matmul");
    let n = 64usize;
    let bf16_file = |name: &str, values: &[f32]| {
        let array = NpyArray {
            dtype: NpyDtype::U16,
            shape: vec![n, n],
            data: values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        };
        let path = dir.join(name);
        npy::write(&path, &array).expect("write bf16 input");
        format!("in:{}", path.display())
    };
    // Small integers: exact in bf16 and in the f32 accumulation.
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 - 2.0).collect();
    let (a_spec, b_spec) = (bf16_file("a.npy", &a), bf16_file("b.npy", &b));
    let c_path = dir.join("c.npy");
    let c_spec = format!("out:{}:f32:{}", c_path.display(), n * n);
    let ptx = Path::new(env!("CARGO_MANIFEST_DIR")).join("emulator/fixtures/matmul_bf16.ptx");
    let mut args = vec![
        "emu",
        ptx.to_str().expect("utf-8 path"),
        "--grid",
        "1,1",
        "--block",
        "128",
        "--shared",
        "32768",
        "--arg",
        &a_spec,
        "--arg",
        &b_spec,
        "--arg",
        &c_spec,
    ];
    for _ in 0..6 {
        args.extend(["--arg", "i32:64"]); // M, N, K and the three strides
    }
    args.extend(["--arg", "u64:0", "--arg", "u64:0"]);
    let out = jagc(&args);
    assert!(out.status.success(), "jagc emu failed: {}", stderr(&out));
    let c = npy::read(&c_path).expect("read c.npy");
    let c: Vec<f32> = c
        .data
        .chunks_exact(4)
        .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    for i in 0..n {
        for j in 0..n {
            let want: f32 = (0..n).map(|p| a[i * n + p] * b[p * n + j]).sum();
            assert_eq!(c[i * n + j], want, "C[{i}][{j}]");
        }
    }
}

/// Writes `ptx` to `dir/name` and returns its path as a string.
fn write_ptx(dir: &Path, name: &str, ptx: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, ptx).expect("write ptx");
    path.to_str().expect("utf-8 path").to_string()
}

/// The 32-bit words of an `.npy` file of u32.
fn read_words(path: &Path) -> Vec<u32> {
    let array = npy::read(path).expect("read output");
    array
        .data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn small_scalar_arg_kinds_reach_u8_s8_u16_s16_f16_bf16_params() {
    // Each parameter is loaded with its own type and stored as one u32 word (the f16 and
    // bf16 ones converted to f32); a `.u8` bool selects 11 or 22 as Triton's code does.
    let dir = temp_dir("small-scalars");
    let ptx = write_ptx(
        &dir,
        "small.ptx",
        ".version 8.0\n.target sm_80\n.address_size 64\n\n\
         .visible .entry small(.param .u8 flag, .param .s8 b, .param .u16 c, .param .s16 d,\n\
         \x20   .param .f16 e, .param .bf16 f, .param .u64 .ptr .global .align 1 out)\n{\n\
         \x20   .reg .pred %p<2>;\n    .reg .b16 %rs<4>;\n    .reg .b32 %r<8>;\n\
         \x20   .reg .f32 %f<4>;\n    .reg .b64 %rd<2>;\n\
         \x20   ld.param.u8 %rs1, [flag];\n    and.b16 %rs1, %rs1, 1;\n\
         \x20   setp.eq.b16 %p1, %rs1, 1;\n    selp.u32 %r1, 11, 22, %p1;\n\
         \x20   ld.param.s8 %r2, [b];\n    ld.param.u16 %r3, [c];\n    ld.param.s16 %r4, [d];\n\
         \x20   ld.param.b16 %rs2, [e];\n    cvt.f32.f16 %f1, %rs2;\n\
         \x20   ld.param.b16 %rs3, [f];\n    cvt.f32.bf16 %f2, %rs3;\n\
         \x20   ld.param.u64 %rd1, [out];\n\
         \x20   st.global.v4.u32 [%rd1], {%r1, %r2, %r3, %r4};\n\
         \x20   st.global.v2.f32 [%rd1+16], {%f1, %f2};\n    ret;\n}\n",
    );
    let out_path = dir.join("out.npy");
    let out_spec = format!("out:{}:u32:6", out_path.display());
    let out = jagc(&[
        "emu",
        &ptx,
        "--grid",
        "1",
        "--block",
        "1",
        "--arg",
        "u8:1",
        "--arg",
        "s8:-3",
        "--arg",
        "u16:0xfffe",
        "--arg",
        "s16:-300",
        "--arg",
        "f16:1.5",
        "--arg",
        "bf16:-2.25",
        "--arg",
        &out_spec,
    ]);
    assert!(out.status.success(), "jagc emu failed: {}", stderr(&out));
    assert_eq!(
        read_words(&out_path),
        vec![
            11,
            (-3i32) as u32,
            0xfffe,
            (-300i32) as u32,
            1.5f32.to_bits(),
            (-2.25f32).to_bits()
        ]
    );
    // A bool of 0 takes the other branch; an out-of-range u8 is refused by name.
    let out = jagc(&[
        "emu", &ptx, "--grid", "1", "--block", "1", "--arg", "u8:0", "--arg", "s8:0", "--arg",
        "u16:0", "--arg", "s16:0", "--arg", "f16:0", "--arg", "bf16:0", "--arg", &out_spec,
    ]);
    assert!(out.status.success(), "jagc emu failed: {}", stderr(&out));
    assert_eq!(read_words(&out_path)[0], 22);
    let out = jagc(&[
        "emu", &ptx, "--grid", "1", "--block", "1", "--arg", "u8:256",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("u8:256"), "{}", stderr(&out));
}

/// Lane 0 of warps 0 and 1 store `va` and `vb` to one shared f32 without a barrier
/// between them; thread 0 copies it to `out` after one.
const RACE_PTX: &str = ".version 8.0\n.target sm_80\n.address_size 64\n\
    .visible .entry race(.param .u64 out, .param .u32 va, .param .u32 vb)\n{\n\
    .reg .pred %p<3>;\n.reg .b32 %r<8>;\n.reg .b64 %rd<2>;\n.shared .align 4 .b8 s[4];\n\
    ld.param.u64 %rd1, [out];\nld.param.u32 %r1, [va];\nld.param.u32 %r2, [vb];\n\
    mov.u32 %r3, %tid.x;\nmov.u32 %r6, s;\nand.b32 %r4, %r3, 31;\n\
    setp.ne.u32 %p1, %r4, 0;\n@%p1 bra DONE;\nsetp.lt.u32 %p2, %r3, 32;\n\
    selp.b32 %r5, %r1, %r2, %p2;\nst.shared.f32 [%r6], %r5;\nDONE:\nbar.sync 0;\n\
    setp.ne.u32 %p1, %r3, 0;\n@%p1 bra END;\nld.shared.u32 %r7, [%r6];\n\
    st.global.u32 [%rd1], %r7;\nEND:\nret;\n}\n";

#[test]
fn near_value_shared_race_is_a_warning_on_stderr_unless_strict_races() {
    let dir = temp_dir("race");
    let ptx = write_ptx(&dir, "race.ptx", RACE_PTX);
    let out_path = dir.join("out.npy");
    let out_spec = format!("out:{}:u32:1", out_path.display());
    // 1.0f and the next f32 up.
    let base = [
        "emu",
        &ptx,
        "--grid",
        "1",
        "--block",
        "64",
        "--arg",
        &out_spec,
        "--arg",
        "u32:1065353216",
        "--arg",
        "u32:1065353217",
    ];
    let out = jagc(&base);
    assert!(out.status.success(), "jagc emu failed: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning:")
            && err.contains("shared-memory data race")
            && err.contains("1 ulp"),
        "{err}"
    );
    let word = read_words(&out_path)[0];
    assert!(word == 1065353216 || word == 1065353217, "{word}");

    std::fs::remove_file(&out_path).expect("remove out.npy");
    let mut strict = base.to_vec();
    strict.push("--strict-races");
    let out = jagc(&strict);
    assert!(!out.status.success(), "--strict-races must fail the run");
    assert!(
        stderr(&out).contains("shared-memory data race"),
        "{}",
        stderr(&out)
    );
    assert!(
        !out_path.exists(),
        "no output is written after a failed run"
    );

    // Values far apart are an error without --strict-races too.
    let mut far = base.to_vec();
    far[11] = "u32:1073741824"; // 2.0f
    let out = jagc(&far);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("shared-memory data race"),
        "{}",
        stderr(&out)
    );
}

/// A kernel that stores 1.0 at out[tid] (one float per thread of CTA 0).
const STORE_PTX: &str = ".version 8.0\n.target sm_80\n.address_size 64\n\
    .visible .entry store(.param .u64 out)\n{\n.reg .b32 %r<2>;\n.reg .b64 %rd<4>;\n\
    ld.param.u64 %rd0, [out];\nmov.u32 %r0, %tid.x;\nmul.wide.u32 %rd1, %r0, 4;\n\
    add.s64 %rd2, %rd0, %rd1;\nst.global.u32 [%rd2], 1065353216;\nret;\n}\n";

#[test]
fn grid_that_wrapped_the_cta_count_is_refused() {
    // 2^31 * 2^31 * 4 CTAs is 2^64: it used to wrap to 0, run nothing and exit 0.
    let dir = temp_dir("grid");
    let ptx = write_ptx(&dir, "store.ptx", STORE_PTX);
    let out_spec = format!("out:{}:f32:32", dir.join("y.npy").display());
    for (grid, block, needle) in [
        ("2147483648,2147483648,4", "32", "grid"),
        ("1,65536", "32", "grid"),
        ("1", "1024,1,2", "block"),
        ("1", "1,1,65", "block"),
    ] {
        let out = jagc(&[
            "emu", &ptx, "--grid", grid, "--block", block, "--arg", &out_spec,
        ]);
        assert!(
            !out.status.success(),
            "--grid {grid} --block {block} was accepted"
        );
        let err = stderr(&out);
        assert!(
            err.contains(needle) && err.contains("it must be 1 to"),
            "{err}"
        );
        assert!(!dir.join("y.npy").exists());
    }
}

#[test]
fn out_buffer_whose_byte_size_overflows_is_refused() {
    // 2^62 u32 elements are 2^64 bytes: the product used to wrap to 0 and a corrupt
    // .npy was written with exit status 0.
    let dir = temp_dir("huge-out");
    let ptx = write_ptx(&dir, "store.ptx", STORE_PTX);
    let w = dir.join("w.npy");
    let out = jagc(&[
        "emu",
        &ptx,
        "--grid",
        "1",
        "--block",
        "32",
        "--arg",
        &format!("out:{}:u32:4611686018427387904", w.display()),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("do not fit"), "{}", stderr(&out));
    assert!(!w.exists());
    // Large enough to be past the emulated address space but not to overflow.
    let out = jagc(&[
        "emu",
        &ptx,
        "--grid",
        "1",
        "--block",
        "32",
        "--arg",
        &format!("out:{}:u32:1152921504606846976", w.display()),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot allocate"), "{}", stderr(&out));
    assert!(!w.exists());
}

#[test]
fn huge_grid_stops_at_max_instructions() {
    // 2^31 - 1 CTAs used to run for hours; the launch budget stops it.
    let dir = temp_dir("budget");
    let ptx = write_ptx(&dir, "store.ptx", STORE_PTX);
    let y = dir.join("y.npy");
    let out_spec = format!("out:{}:f32:32", y.display());
    let out = jagc(&[
        "emu",
        &ptx,
        "--grid",
        "2147483647",
        "--block",
        "1",
        "--max-instructions",
        "50000",
        "--arg",
        &out_spec,
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("50000 warp instructions") && err.contains("--max-instructions"),
        "{err}"
    );
    assert!(!y.exists());
}

#[test]
fn long_run_stops_at_max_seconds() {
    // One thread spinning 2^31 iterations would take minutes.
    let dir = temp_dir("budget-time");
    let ptx = write_ptx(
        &dir,
        "spin.ptx",
        ".version 8.0\n.target sm_80\n.address_size 64\n\
         .visible .entry spin(.param .u32 n)\n{\n.reg .pred %p<2>;\n.reg .b32 %r<4>;\n\
         ld.param.u32 %r1, [n];\nmov.u32 %r2, 0;\nLOOP:\nadd.u32 %r2, %r2, 1;\n\
         setp.lt.u32 %p1, %r2, %r1;\n@%p1 bra LOOP;\nret;\n}\n",
    );
    let start = std::time::Instant::now();
    let out = jagc(&[
        "emu",
        &ptx,
        "--grid",
        "1",
        "--block",
        "1",
        "--max-seconds",
        "0.2",
        "--arg",
        "u32:2147483648",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("0.200 s of wall-clock time"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn profile_prints_the_cost_model_table() {
    // 64 threads store one float each: 2 warps x 128 bytes, 4 sectors each.
    let dir = temp_dir("profile");
    let ptx = write_ptx(&dir, "store.ptx", STORE_PTX);
    let out_spec = format!("out:{}:f32:64", dir.join("y.npy").display());
    let out = jagc(&[
        "emu",
        &ptx,
        "--grid",
        "1",
        "--block",
        "64",
        "--profile",
        "--arg",
        &out_spec,
    ]);
    assert!(out.status.success(), "jagc emu failed: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = |name: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` row in:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // Per warp: 1 ld.param + ret (other), mov, mul.wide, add (alu), st.global (global).
    assert_eq!(row("warp instructions")[2], "12", "{stdout}");
    assert_eq!(row("alu")[1], "6", "{stdout}");
    assert_eq!(row("global ")[1], "2", "{stdout}");
    assert_eq!(row("written")[1..3], ["256", "8"], "{stdout}");
    assert_eq!(row("read")[1..3], ["0", "0"], "{stdout}");
    // Without --profile there is no table.
    let out = jagc(&[
        "emu", &ptx, "--grid", "1", "--block", "64", "--arg", &out_spec,
    ]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("bank conflicts"));
}

/// A TMA load through a `tmap:` argument: one thread loads a 32 x 8 box of f32 with
/// 128-byte swizzling from a 16 x 64 tensor (crossing its right and bottom ends, which
/// read as zeros), every thread waits on the mbarrier, and the box's shared bytes are
/// copied out. Each word is checked at its swizzled place: the 16-byte chunk `j` of
/// 128-byte row `r` sits at chunk `j ^ (r % 8)`.
#[test]
fn tensor_map_argument_feeds_a_tma_load() {
    let dir = temp_dir("tmap");
    let (rows, cols, x0, y0) = (16usize, 64usize, 40i64, 12i64);
    let x: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
    let input = NpyArray {
        dtype: NpyDtype::F32,
        shape: vec![rows, cols],
        data: x.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    npy::write(dir.join("x.npy"), &input).expect("write x.npy");
    let ptx = write_ptx(
        &dir,
        "tma.ptx",
        ".version 8.3\n.target sm_90a\n.address_size 64\n\
         .visible .entry tma(.param .u64 x, .param .align 64 .b8 map[128], .param .u64 out,\n\
         \x20   .param .u32 cx, .param .u32 cy)\n{\n\
         \x20   .reg .pred %p<4>;\n    .reg .b32 %r<16>;\n    .reg .b64 %rd<8>;\n\
         \x20   .shared .align 1024 .b8 box[1024];\n    .shared .align 8 .b64 bar;\n\
         \x20   mov.u32 %r0, %tid.x;\n    ld.param.u32 %r1, [cx];\n    ld.param.u32 %r2, [cy];\n\
         \x20   setp.eq.u32 %p1, %r0, 0;\n    @%p1 mbarrier.init.shared::cta.b64 [bar], 1;\n\
         \x20   bar.sync 0;\n    mov.b64 %rd1, map;\n    cvta.param.u64 %rd2, %rd1;\n\
         \x20   @!%p1 bra WAIT;\n\
         \x20   mbarrier.arrive.expect_tx.shared::cta.b64 _, [bar], 1024;\n\
         \x20   cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [box], [%rd2, {%r1, %r2}], [bar];\n\
         WAIT:\n    mov.u32 %r3, 0;\n\
         LOOP:\n    mbarrier.try_wait.parity.shared::cta.b64 %p2, [bar], %r3;\n    @!%p2 bra LOOP;\n\
         \x20   shl.b32 %r4, %r0, 2;\n    mov.u32 %r5, box;\n    add.u32 %r5, %r5, %r4;\n\
         \x20   ld.shared.u32 %r6, [%r5];\n    ld.param.u64 %rd3, [out];\n\
         \x20   mul.wide.u32 %rd4, %r0, 4;\n    add.s64 %rd5, %rd3, %rd4;\n\
         \x20   st.global.u32 [%rd5], %r6;\n    ret;\n}\n",
    );
    let x_spec = format!("in:{}", dir.join("x.npy").display());
    let out_path = dir.join("out.npy");
    let out_spec = format!("out:{}:u32:256", out_path.display());
    let cx = format!("u32:{x0}");
    let cy = format!("u32:{y0}");
    let map = format!("tmap:1:f32:{cols}x{rows}:{}:32x8:swizzle=128", cols * 4);
    let out = jagc(&[
        "emu", &ptx, "--grid", "1", "--block", "256", "--arg", &x_spec, "--arg", &map, "--arg",
        &out_spec, "--arg", &cx, "--arg", &cy,
    ]);
    assert!(out.status.success(), "jagc emu failed: {}", stderr(&out));
    let words = read_words(&out_path);
    for r in 0..8usize {
        for c in 0..32usize {
            let (gx, gy) = (x0 as usize + c, y0 as usize + r);
            let want = if gx < cols && gy < rows {
                x[gy * cols + gx].to_bits()
            } else {
                0
            };
            let chunk = (c / 4) ^ (r % 8);
            let at = r * 32 + chunk * 4 + c % 4;
            assert_eq!(words[at], want, "box element ({r}, {c})");
        }
    }
    // The same kernel without the `x` parameter (as Triton's host-side descriptors are
    // passed): `host:` uploads x without passing it, and still counts as argument 1.
    let text = std::fs::read_to_string(&ptx).expect("read tma.ptx");
    let no_x = write_ptx(&dir, "tma_host.ptx", &text.replace(".param .u64 x, ", ""));
    let host_x = format!("host:{x_spec}");
    let out = jagc(&[
        "emu", &no_x, "--grid", "1", "--block", "256", "--arg", &host_x, "--arg", &map, "--arg",
        &out_spec, "--arg", &cx, "--arg", &cy,
    ]);
    assert!(out.status.success(), "jagc emu failed: {}", stderr(&out));
    assert_eq!(read_words(&out_path), words);
    // A map over an argument that is not an earlier buffer is refused by name.
    let bad = format!("tmap:2:f32:{cols}x{rows}:{}:32x8", cols * 4);
    let out = jagc(&[
        "emu", &ptx, "--grid", "1", "--block", "256", "--arg", &x_spec, "--arg", &bad,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("tensor map"), "{}", stderr(&out));
}

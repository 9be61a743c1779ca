//! `jagc emu` end to end: the built binary runs the Triton softmax fixture on `.npy`
//! files and its output is checked against an f64 softmax; bad arguments, unknown
//! kernels and checker failures exit non-zero with a message naming the culprit.

use jagged_ir::npy::{self, NpyArray, NpyDtype};
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
        "f16:1.0",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("f16:1.0"), "{}", stderr(&out));
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

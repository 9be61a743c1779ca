//! Code-generation time: median microseconds to lower each primitive to PTX
//! (templates + printing), per spec; then the median time of `compile` on
//! graphs of the general path (the `.jir` files of `tests/graphs/` and the
//! builtin graphs with the general path forced), with the node count of
//! each. Run with `cargo run --release -p jagged-codegen --example codegen_time`.

use std::time::Instant;

use jagged_codegen::general::compile_general;
use jagged_ir::Graph;

use jagged_codegen::templates::segment::ReduceKind;
use jagged_codegen::{Arch, DType, Primitive, Spec, lower};

const RUNS: usize = 200;

fn main() -> Result<(), jagged_codegen::CodegenError> {
    let primitives = [
        Primitive::CompleteCumsum,
        Primitive::JaggedToPaddedDense,
        Primitive::DenseToJagged,
        Primitive::jagged_dense_elementwise_mul(),
        Primitive::JaggedReduce(ReduceKind::Sum),
        Primitive::JaggedSoftmax,
        Primitive::MaskedSelectJagged,
    ];
    let specs = [
        Spec::new(vec![64], 100, DType::F32, DType::I32, Arch::Sm80),
        Spec::new(vec![3, 5], 1000, DType::BF16, DType::I64, Arch::Sm90a),
    ];
    println!(
        "{:<28} {:<50} {:>8} {:>8} {:>10}",
        "primitive", "spec", "kernels", "ptx B", "median us"
    );
    for spec in &specs {
        for p in &primitives {
            let mut times = Vec::with_capacity(RUNS);
            let mut compiled = lower(p, spec)?;
            for _ in 0..RUNS {
                let start = Instant::now();
                compiled = lower(p, spec)?;
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{:<28} {:<50} {:>8} {:>8} {:>10.1}",
                p.name(),
                spec.to_string(),
                compiled.launches.len(),
                compiled.ptx.len(),
                times[RUNS / 2]
            );
        }
    }
    general_path()
}

/// Median microseconds of `f` over [`RUNS`] runs.
fn median_us(
    mut f: impl FnMut() -> Result<(), jagged_codegen::CodegenError>,
) -> Result<f64, jagged_codegen::CodegenError> {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[RUNS / 2])
}

/// `compile` (general path) on every `.jir` file and the builtin graphs.
fn general_path() -> Result<(), jagged_codegen::CodegenError> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/graphs");
    let mut graphs: Vec<Graph> = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jir"))
    {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match Graph::parse(&text) {
            Ok(g) => graphs.push(g),
            Err(e) => eprintln!("{}: {e}", path.display()),
        }
    }
    let js = |dtype, inner: &[usize]| jagged_ir::ops::JaggedSpec {
        dtype,
        offsets: DType::I32,
        inner: inner.to_vec(),
    };
    let builtins = [
        jagged_ir::ops::jagged_softmax(&js(DType::F32, &[16])),
        jagged_ir::ops::jagged_reduce(&js(DType::BF16, &[8]), jagged_ir::ReduceOp::Mean),
        jagged_ir::ops::masked_select_jagged(&js(DType::F32, &[4]), DType::U8),
        jagged_ir::ops::fbgemm_jagged_flash_attention_basic(&jagged_ir::ops::FbgemmAttentionSpec {
            input_dtype: DType::F32,
            dtype: DType::F32,
            offsets: DType::I32,
            head_dim: 8,
            use_mask: true,
        }),
    ];
    graphs.extend(builtins.into_iter().filter_map(Result::ok));
    println!();
    println!(
        "{:<40} {:>6} {:>8} {:>8} {:>10}",
        "graph (general path)", "nodes", "kernels", "ptx B", "median us"
    );
    let mut worst_small = 0.0f64;
    for g in &graphs {
        let spec = Spec::for_graph(g, 128, Arch::Sm80)?;
        let compiled = compile_general(g, &spec)?;
        let us = median_us(|| compile_general(g, &spec).map(|_| ()))?;
        let nodes = g.nodes().len();
        if nodes <= 12 {
            worst_small = worst_small.max(us);
        }
        println!(
            "{:<40} {:>6} {:>8} {:>8} {:>10.1}",
            g.name(),
            nodes,
            compiled.kernel.launches.len(),
            compiled.kernel.ptx.len(),
            us
        );
    }
    println!("slowest median over graphs of at most 12 nodes: {worst_small:.1} us");
    Ok(())
}

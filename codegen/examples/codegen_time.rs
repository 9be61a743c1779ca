//! Code-generation time: median microseconds to lower each primitive to PTX
//! (templates + printing), per spec. Run with
//! `cargo run --release -p jagged-codegen --example codegen_time`.

use std::time::Instant;

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
    Ok(())
}

//! The interaction ops of `jagged::ops::interactions` for
//! `bench/gpu/interactions_bench.py`:
//!
//! - `plan DIR [sm_80|sm_90a]`: compiles every benchmarked specialization
//!   and writes its PTX and launch metadata (JSON) into `DIR`, with a
//!   `manifest.json` listing them, for the GPU machine (which needs no
//!   Rust);
//! - `emulate OP DTYPE DIM MAX_LEN LENGTHS REPS`: runs one op on the
//!   emulator on random inputs over `LENGTHS` (comma-separated), checks
//!   every output against the f64 reference and prints one JSON line (the
//!   relative error, the wall times, whether tensor cores ran): the
//!   benchmark's `--dry-run`.
//!
//! `cargo run --release --example interactions_plan -- plan bench/gpu/interactions_prebuilt`

use std::error::Error;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use jagged::codegen::launch::swizzle_bytes;
use jagged::codegen::{Arch, CompiledKernel, ParamBinding, SizeExpr, Spec, compile};
use jagged::ir::{DType, DenseTensor, Graph};
use jagged::ops::interactions::*;
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, random_inputs, rel_l2};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The benchmarked ops.
const OPS: [&str; 6] = [
    "jagged_dense_bmm",
    "jagged_jagged_bmm",
    "jagged_dense_dot",
    "jagged_pairwise_dot",
    "jagged_dense_bmm_backward",
    "jagged_jagged_bmm_backward",
];

/// The graph of `op` with every inner dim `dim` (f32 with tf32 when
/// `dtype` is `tf32`).
fn graph(op: &str, dtype: &str, dim: usize) -> Result<Graph> {
    let (t, tf32) = match dtype {
        "tf32" => (DType::F32, true),
        other => (
            DType::from_name(other).ok_or_else(|| format!("unknown dtype {other}"))?,
            false,
        ),
    };
    let i = DType::I64;
    let g = match (op, tf32) {
        ("jagged_dense_bmm", false) => jagged_dense_bmm_full::graph(t, dim, dim, i),
        ("jagged_dense_bmm", true) => jagged_dense_bmm_tf32::graph(t, dim, dim, i),
        ("jagged_jagged_bmm", false) => jagged_jagged_bmm_full::graph(t, dim, dim, i),
        ("jagged_jagged_bmm", true) => jagged_jagged_bmm_tf32::graph(t, dim, dim, i),
        ("jagged_dense_dot", false) => jagged_dense_dot_full::graph(t, dim, dim, i),
        ("jagged_dense_dot", true) => jagged_dense_dot_tf32::graph(t, dim, dim, i),
        ("jagged_pairwise_dot", false) => jagged_pairwise_dot_full::graph(t, dim, i),
        ("jagged_pairwise_dot", true) => jagged_pairwise_dot_tf32::graph(t, dim, i),
        ("jagged_dense_bmm_backward", false) => {
            jagged_dense_bmm_backward_full::graph(t, dim, dim, i)
        }
        ("jagged_dense_bmm_backward", true) => {
            jagged_dense_bmm_backward_tf32::graph(t, dim, dim, i)
        }
        ("jagged_jagged_bmm_backward", false) => {
            jagged_jagged_bmm_backward_full::graph(t, dim, dim, i)
        }
        ("jagged_jagged_bmm_backward", true) => {
            jagged_jagged_bmm_backward_tf32::graph(t, dim, dim, i)
        }
        _ => return Err(format!("unknown op {op}").into()),
    };
    Ok(g?)
}

fn size_json(e: &SizeExpr) -> String {
    match e {
        SizeExpr::Const(v) => format!("{{\"const\": {v}}}"),
        SizeExpr::Batch => "\"B\"".to_string(),
        SizeExpr::TotalRows => "\"T\"".to_string(),
        SizeExpr::MaxLen => "\"N\"".to_string(),
        SizeExpr::Add(a, b) => format!("{{\"add\": [{}, {}]}}", size_json(a), size_json(b)),
        SizeExpr::Mul(a, b) => format!("{{\"mul\": [{}, {}]}}", size_json(a), size_json(b)),
        SizeExpr::CeilDiv(a, k) => format!("{{\"ceil_div\": [{}, {k}]}}", size_json(a)),
    }
}

/// Launch metadata as JSON: the PTX file, the inputs' names and dtypes, and
/// per launch its kernel, grid, block, shared memory and parameters.
fn kernel_json(g: &Graph, c: &CompiledKernel, ptx_file: &str) -> String {
    let inputs: Vec<String> = g
        .inputs()
        .map(|(_, n, t)| format!("{{\"name\": \"{n}\", \"dtype\": \"{}\"}}", t.dtype))
        .collect();
    let mut s = format!(
        "{{\"ptx\": \"{ptx_file}\", \"inputs\": [{}], \"launches\": [",
        inputs.join(", ")
    );
    for (i, l) in c.launches.iter().enumerate() {
        let params: Vec<String> = l
            .params
            .iter()
            .map(|p| match p {
                ParamBinding::Input(i) => format!("[\"in\", {i}]"),
                ParamBinding::Output(i) => format!("[\"out\", {i}]"),
                ParamBinding::Scratch(i) => format!("[\"scratch\", {i}]"),
                ParamBinding::Size(e) => format!("[\"u64\", {}]", size_json(e)),
                ParamBinding::FloatAttr(n) => format!("[\"f32\", \"{n}\"]"),
                ParamBinding::TensorMap(m) => format!(
                    "[\"tmap\", {}, \"{}\", {}, {:?}, [{}]]",
                    m.input,
                    m.dtype.name(),
                    swizzle_bytes(m.swizzle),
                    m.box_dim,
                    m.dims.iter().map(size_json).collect::<Vec<_>>().join(", ")
                ),
            })
            .collect();
        let _ = write!(
            s,
            "{}{{\"entry\": \"{}\", \"block\": {}, \"smem\": {}, \"grid\": {{\"items\": {}, \"per_block\": {}, \"max\": {}}}, \"params\": [{}]}}",
            if i > 0 { ", " } else { "" },
            l.entry,
            l.block,
            l.dynamic_shared_bytes,
            size_json(&l.grid.items),
            l.grid.items_per_block,
            l.grid.max_blocks,
            params.join(", ")
        );
    }
    let outs: Vec<String> = c
        .outputs
        .iter()
        .zip(g.outputs())
        .map(|(o, named)| {
            format!(
                "{{\"name\": \"{}\", \"dtype\": \"{}\", \"elems\": {}}}",
                named.name,
                o.elem,
                size_json(&o.elems)
            )
        })
        .collect();
    let scratch: Vec<String> = c.scratch.iter().map(|b| size_json(&b.bytes)).collect();
    let _ = write!(
        s,
        "], \"outputs\": [{}], \"scratch\": [{}]}}",
        outs.join(", "),
        scratch.join(", ")
    );
    s
}

/// `plan DIR [ARCH]`: every (op, dtype, dim, max_len) of the benchmark.
fn plan(dir: &str, arch: Arch) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut entries = Vec::new();
    for op in OPS {
        for dtype in ["bf16", "f16", "f32", "tf32"] {
            for dim in [64usize, 128] {
                for max_len in [256u64, 1024] {
                    let g = graph(op, dtype, dim)?;
                    let spec = Spec::for_graph(&g, max_len, arch)?;
                    let kernel = compile(&g, &spec)?;
                    let id = format!("{op}_{dtype}_d{dim}_n{max_len}");
                    let ptx_file = format!("{id}.ptx");
                    std::fs::write(format!("{dir}/{ptx_file}"), &kernel.ptx)?;
                    entries.push(format!(
                        "{{\"id\": \"{id}\", \"op\": \"{op}\", \"dtype\": \"{dtype}\", \"dim\": {dim}, \"max_len\": {max_len}, \"kernel\": {}}}",
                        kernel_json(&g, &kernel, &ptx_file)
                    ));
                }
            }
        }
    }
    std::fs::write(
        format!("{dir}/manifest.json"),
        format!(
            "{{\"arch\": \"{arch}\", \"specs\": [\n{}\n]}}\n",
            entries.join(",\n")
        ),
    )?;
    println!("wrote {} specializations to {dir}", entries.len());
    Ok(())
}

/// `emulate OP DTYPE DIM MAX_LEN LENGTHS REPS`.
fn emulate(args: &[String]) -> Result<()> {
    let [op, dtype, dim, max_len, lengths, reps] = args else {
        return Err("usage: emulate OP DTYPE DIM MAX_LEN LENGTHS REPS".into());
    };
    let (dim, max_len, reps): (usize, usize, usize) =
        (dim.parse()?, max_len.parse()?, reps.parse()?);
    let lengths: Vec<usize> = lengths
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let g = graph(op, dtype, dim)?;
    let mut rt = Runtime::with_backend(BackendKind::Emu)?;
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    let spec = Spec::for_graph(&g, max_len as u64, Arch::Sm90a)?;
    let kernel = compile(&g, &spec)?;
    let inputs = random_inputs(&g, &lengths, max_len, 1.0, &mut Rng::new(1));
    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let attrs = [("max_len", jagged::ir::AttrValue::Index(max_len))];
    let expected = jagged::ir::evaluate(&g, &named, &attrs)?;
    let mut times = Vec::new();
    let mut worst: f64 = 0.0;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let got = rt.run_graph_host(&g, &spec, &named, &attrs)?;
        times.push(start.elapsed().as_secs_f64());
        for (name, want) in &expected {
            let have = got.get(name).ok_or_else(|| format!("no output {name}"))?;
            if have.shape() != want.shape() {
                return Err(
                    format!("{name}: shape {:?}, want {:?}", have.shape(), want.shape()).into(),
                );
            }
            worst = worst.max(rel_l2(&have.to_f64(), &want.to_f64()));
        }
    }
    let times: Vec<String> = times.iter().map(|t| format!("{t:.6}")).collect();
    println!(
        "{{\"rel_err\": {worst:e}, \"emu_s\": [{}], \"mma\": {}, \"kernels\": {}}}",
        times.join(", "),
        kernel.ptx.contains("mma.sync"),
        kernel.launches.len()
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("plan") => {
            let dir = args.get(1).map_or("bench/gpu/interactions_prebuilt", String::as_str);
            let arch = match args.get(2).map(String::as_str) {
                None | Some("sm_90a") => Arch::Sm90a,
                Some("sm_80") => Arch::Sm80,
                Some(other) => return Err(format!("unknown arch {other}").into()),
            };
            plan(dir, arch)
        }
        Some("emulate") => emulate(&args[1..]),
        _ => Err("usage: interactions_plan plan DIR [sm_80|sm_90a] | emulate OP DTYPE DIM MAX_LEN LENGTHS REPS".into()),
    }
}

//! The Rust side of `bench/gpu/attention_bench.py` (benchmark (c) of
//! bench/attention/README.md).
//!
//! - `attention_bench plan DIR`: writes the PTX (sm_90a) of the forward and
//!   backward kernels of every GPU benchmark spec (D in {64, 128}, max_len
//!   in {256, 1024, 4096}, causal or not, bf16 softmax) and `manifest.json`
//!   with their launch metadata (entries, blocks, dynamic shared memory,
//!   grid rules and buffer sizes as expression trees over B, T, max_len,
//!   parameter bindings), for the script to launch with CuPy.
//! - `attention_bench emulate D H MAX_LEN CAUSAL LENGTHS REPS`: the same
//!   kernels (sm_80 PTX) on random bf16 inputs in the emulator, the
//!   script's `--dry-run` backend: prints one JSON line with the wall times
//!   of each forward / backward run and the forward's relative error
//!   against jagged-ir's reference.

#[allow(dead_code)]
#[path = "../tests/common/emu.rs"]
mod emu;

use std::fmt::Write as _;
use std::time::Instant;

use jagged_codegen::templates::attention_bwd::compile_attention_backward;
use jagged_codegen::{
    Arch, CompiledKernel, DType, ParamBinding, RunSizes, SizeExpr, Spec, compile,
};
use jagged_ir::ops::{Activation, AttentionSpec};
use jagged_ir::{AttrValue, DenseTensor, Graph};

type Error = Box<dyn std::error::Error>;

const SCALE: f64 = 0.125;

/// Inputs of the softmax backward, in binding order.
const BWD_INPUTS: [&str; 7] = ["q", "k", "v", "out", "dout", "lse", "offsets"];

fn graph(head_dim: usize, heads: usize, causal: bool) -> Result<Graph, Error> {
    Ok(jagged_ir::ops::jagged_flash_attention(&AttentionSpec {
        input_dtype: DType::BF16,
        dtype: DType::BF16,
        offsets: DType::I32,
        heads,
        head_dim,
        value_dim: head_dim,
        causal,
        activation: Activation::Softmax,
    })?)
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

/// Launch metadata as JSON; `inputs` names the kernel inputs in binding order.
fn kernel_json(c: &CompiledKernel, ptx_file: &str, inputs: &[&str]) -> String {
    let names: Vec<String> = inputs.iter().map(|n| format!("\"{n}\"")).collect();
    let mut s = format!(
        "{{\"ptx\": \"{ptx_file}\", \"inputs\": [{}], \"launches\": [",
        names.join(", ")
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
        .map(|o| {
            format!(
                "{{\"dtype\": \"{}\", \"elems\": {}}}",
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

/// Writes the PTX and manifest of every benchmark spec, `heads` heads at
/// every head dim (the published results name H; it was `1024 / D` before,
/// i.e. 8 at D = 128).
fn plan(dir: &str, heads: usize) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let mut specs = Vec::new();
    for head_dim in [64usize, 128] {
        for max_len in [256u64, 1024, 4096] {
            for causal in [false, true] {
                let g = graph(head_dim, heads, causal)?;
                let spec = Spec::for_graph(&g, max_len, Arch::Sm90a)?;
                let fwd = compile(&g, &spec)?;
                let bwd = compile_attention_backward(&g, &spec)?;
                let fwd_inputs: Vec<&str> = g.inputs().map(|(_, name, _)| name).collect();
                let id = format!(
                    "d{head_dim}_n{max_len}_{}",
                    if causal { "causal" } else { "full" }
                );
                std::fs::write(format!("{dir}/{id}_fwd.ptx"), &fwd.ptx)?;
                std::fs::write(format!("{dir}/{id}_bwd.ptx"), &bwd.ptx)?;
                specs.push(format!(
                    "{{\"id\": \"{id}\", \"head_dim\": {head_dim}, \"heads\": {heads}, \"max_len\": {max_len}, \"causal\": {causal}, \"scale\": {SCALE}, \"fwd\": {}, \"bwd\": {}}}",
                    kernel_json(&fwd, &format!("{id}_fwd.ptx"), &fwd_inputs),
                    kernel_json(&bwd, &format!("{id}_bwd.ptx"), &BWD_INPUTS)
                ));
            }
        }
    }
    std::fs::write(
        format!("{dir}/manifest.json"),
        format!("{{\"specs\": [\n{}\n]}}\n", specs.join(",\n")),
    )?;
    println!("wrote {} specs to {dir}", specs.len());
    Ok(())
}

fn emulate(args: &[String]) -> Result<(), Error> {
    let [d, h, n, causal, lengths, reps] = args else {
        return Err("usage: attention_bench emulate D H MAX_LEN CAUSAL(0|1) L1,L2,.. REPS".into());
    };
    let (head_dim, heads, max_len): (usize, usize, usize) = (d.parse()?, h.parse()?, n.parse()?);
    let causal = causal == "1";
    let reps: usize = reps.parse()?;
    let lengths: Vec<usize> = if lengths.is_empty() {
        Vec::new()
    } else {
        lengths
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?
    };
    let g = graph(head_dim, heads, causal)?;
    let spec = Spec::for_graph(&g, max_len as u64, Arch::Sm80)?;
    let fwd = compile(&g, &spec)?;
    let bwd = compile_attention_backward(&g, &spec)?;
    let total: usize = lengths.iter().sum();
    let elems = total * heads * head_dim;
    let mut rng = emu::Rng::new(7);
    let mut random = |scale: f64| -> Vec<f64> {
        (0..elems)
            .map(|_| emu::round_to(rng.float(scale), DType::BF16))
            .collect()
    };
    let (q, k, v, dout) = (random(1.5), random(1.5), random(1.5), random(1.0));
    let mut offsets = vec![0i64];
    for &l in &lengths {
        offsets.push(offsets.last().copied().unwrap_or(0) + l as i64);
    }
    let shape = vec![total, heads, head_dim];
    let t = |x: &[f64]| DenseTensor::from_f64(DType::BF16, shape.clone(), x);
    let off_f: Vec<f64> = offsets.iter().map(|&o| o as f64).collect();
    let off_t = DenseTensor::from_f64(DType::I32, vec![lengths.len() + 1], &off_f)?;
    let (qt, kt, vt) = (t(&q)?, t(&k)?, t(&v)?);
    let named = [("offsets", &off_t), ("q", &qt), ("k", &kt), ("v", &vt)];
    let attrs = [
        ("max_len", AttrValue::Index(max_len)),
        ("scale", AttrValue::Float(SCALE)),
    ];
    let reference = jagged_ir::evaluate(&g, &named, &attrs)?;
    let sizes = RunSizes {
        batch: lengths.len() as u64,
        total_rows: total as u64,
        max_len: max_len as u64,
    };
    let bf = |x: &[f64]| emu::encode_floats(x, DType::BF16);
    let offsets_bytes = emu::encode_ints(&offsets, DType::I32);
    let fwd_inputs = vec![offsets_bytes.clone(), bf(&q), bf(&k), bf(&v)];
    let attrs = [("scale", SCALE as f32)];
    let mut fwd_times = Vec::new();
    let mut outs = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        outs = emu::run(&fwd, &fwd_inputs, sizes, &attrs);
        fwd_times.push(start.elapsed().as_secs_f64());
    }
    let out = emu::decode_floats(&outs[0], DType::BF16);
    let err = emu::rel_l2(&out, &reference["out"].to_f64());
    let bwd_inputs = vec![
        bf(&q),
        bf(&k),
        bf(&v),
        outs[0].clone(),
        bf(&dout),
        outs[1].clone(),
        offsets_bytes,
    ];
    let mut bwd_times = Vec::new();
    let mut grads_finite = true;
    for _ in 0..reps {
        let start = Instant::now();
        let grads = emu::run(&bwd, &bwd_inputs, sizes, &attrs);
        bwd_times.push(start.elapsed().as_secs_f64());
        grads_finite &= grads.iter().all(|g| {
            emu::decode_floats(g, DType::BF16)
                .iter()
                .all(|x| x.is_finite())
        });
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.6}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{{\"fwd_s\": [{}], \"bwd_s\": [{}], \"fwd_rel_err\": {err:e}, \"grads_finite\": {grads_finite}}}",
        list(&fwd_times),
        list(&bwd_times)
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("plan") if args.len() == 2 => plan(&args[1], 16),
        Some("plan") if args.len() == 4 && args[2] == "--heads" => plan(&args[1], args[3].parse()?),
        Some("emulate") => emulate(&args[1..]),
        _ => Err(
            "usage: attention_bench plan DIR [--heads H (default 16)] | emulate D H MAX_LEN CAUSAL LENGTHS REPS"
                .into(),
        ),
    }
}

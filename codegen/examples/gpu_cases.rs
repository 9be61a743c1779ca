//! Writes a folder of GPU check cases for `codegen/scripts/gpu_check.py`:
//! the PTX of each builtin primitive graph, its launches evaluated for the
//! case's sizes, its inputs, and (for the correctness cases) the f64 outputs
//! of jagged-ir's reference evaluator; the performance cases carry only the
//! layout, and the script fills values at random on the device.
//!
//! `cargo run --release -p jagged-codegen --example gpu_cases -- <out-dir>`

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use jagged_codegen::{Arch, CompiledKernel, DType, ParamBinding, RunSizes, Spec, compile};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrValue, DenseTensor, Dim, Graph, ReduceOp};

const PADDING: f64 = -1.5;

/// A tiny deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn float(&mut self) -> f64 {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
    }
}

type BoxError = Box<dyn std::error::Error>;

struct Writer {
    dir: PathBuf,
    json: String,
    count: usize,
}

fn le_bytes(t: &DenseTensor) -> Vec<u8> {
    let v = t.to_f64();
    match t.dtype() {
        DType::F32 => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
        DType::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f64(x).to_le_bytes())
            .collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f64(x).to_le_bytes())
            .collect(),
        DType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
        DType::I64 => v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
        _ => v.iter().map(|&x| x as u8).collect(),
    }
}

fn shape_of(ty: &jagged_ir::TensorType, batch: usize, total: usize, max_len: usize) -> Vec<usize> {
    ty.dims
        .iter()
        .map(|d| match d {
            Dim::Ragged(_) => total,
            Dim::Batch => batch,
            Dim::BatchPlusOne => batch + 1,
            Dim::MaxLen => max_len,
            Dim::Static(n) => *n,
        })
        .collect()
}

impl Writer {
    /// Adds one case. With `check`, values are random here and the reference
    /// outputs are written; otherwise only offsets / lengths are written.
    fn case(
        &mut self,
        graph: &Graph,
        arch: Arch,
        lengths: &[usize],
        max_len: usize,
        check: bool,
    ) -> Result<(), BoxError> {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ self.count as u64);
        let spec = Spec::for_graph(graph, max_len as u64, arch)?;
        let compiled: CompiledKernel = compile(graph, &spec)?;
        let id = self.count;
        self.count += 1;
        let batch = lengths.len();
        let total: usize = lengths.iter().sum();
        let sizes = RunSizes {
            batch: batch as u64,
            total_rows: total as u64,
            max_len: max_len as u64,
        };
        std::fs::write(self.dir.join(format!("c{id}.ptx")), &compiled.ptx)?;
        let mut offsets = vec![0.0];
        for &l in lengths {
            offsets.push(offsets.last().copied().unwrap_or(0.0) + l as f64);
        }
        let mut named = Vec::new();
        let mut inputs_json = Vec::new();
        let mut moved_bytes = 0usize;
        for (k, (_, name, ty)) in graph.inputs().enumerate() {
            let shape = shape_of(ty, batch, total, max_len);
            let n: usize = shape.iter().product();
            let explicit = matches!(name, "offsets" | "lengths");
            // Bytes the kernels must touch: a padded [B, N, ...] input is read
            // only at its valid rows.
            moved_bytes += if ty.dims.contains(&Dim::MaxLen) {
                let valid: usize = lengths.iter().map(|&l| l.min(max_len)).sum();
                let inner: usize = shape.iter().skip(2).product();
                valid * inner * ty.dtype.size()
            } else {
                n * ty.dtype.size()
            };
            if check || explicit {
                let values: Vec<f64> = match name {
                    "offsets" => offsets.clone(),
                    "lengths" => lengths.iter().map(|&l| l as f64).collect(),
                    "mask" => (0..n).map(|_| rng.below(2) as f64).collect(),
                    _ => (0..n).map(|_| rng.float()).collect(),
                };
                let t = DenseTensor::from_f64(ty.dtype, shape, &values)?;
                let file = format!("c{id}_in{k}.bin");
                std::fs::write(self.dir.join(&file), le_bytes(&t))?;
                inputs_json.push(format!("{{\"file\": \"{file}\"}}"));
                named.push((name.to_string(), t));
            } else {
                inputs_json.push(format!("{{\"random\": \"{}\", \"elems\": {n}}}", ty.dtype));
            }
        }
        let mut outputs_json = Vec::new();
        let expected = if check {
            let refs: Vec<(&str, &DenseTensor)> =
                named.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let attrs: Vec<(&str, AttrValue)> = [
                ("max_len", AttrValue::Index(max_len)),
                ("padding_value", AttrValue::Float(PADDING)),
            ]
            .into_iter()
            .filter(|(n, _)| graph.attr(n).is_some())
            .collect();
            Some(jagged_ir::evaluate(graph, &refs, &attrs)?)
        } else {
            None
        };
        for (k, out) in graph.outputs().iter().enumerate() {
            let meta = &compiled.outputs[k];
            let elems = meta.elems.eval(&sizes);
            // A compacted output is written at its kept rows only (half, for
            // the random 0/1 masks of the performance cases).
            let written = if meta.used_rows_from.is_some() {
                elems / 2
            } else {
                elems
            };
            moved_bytes += written as usize * meta.elem.size();
            let mut entry = format!("{{\"dtype\": \"{}\", \"elems\": {elems}", meta.elem);
            if let Some(expected) = &expected {
                let reference = expected[&out.name].to_f64();
                let file = format!("c{id}_ref{k}.bin");
                let bytes: Vec<u8> = reference.iter().flat_map(|x| x.to_le_bytes()).collect();
                std::fs::write(self.dir.join(&file), bytes)?;
                write!(entry, ", \"ref\": \"{file}\"")?;
            }
            entry.push('}');
            outputs_json.push(entry);
        }
        let scratch: Vec<String> = compiled
            .scratch
            .iter()
            .map(|s| s.bytes.eval(&sizes).to_string())
            .collect();
        let mut launches = Vec::new();
        for l in &compiled.launches {
            let params: Vec<String> = l
                .params
                .iter()
                .map(|p| match p {
                    ParamBinding::Input(i) => format!("[\"in\", {i}]"),
                    ParamBinding::Output(i) => format!("[\"out\", {i}]"),
                    ParamBinding::Scratch(i) => format!("[\"scratch\", {i}]"),
                    ParamBinding::Size(e) => format!("[\"u64\", {}]", e.eval(&sizes)),
                    ParamBinding::FloatAttr(_) => format!("[\"f32\", {PADDING}]"),
                    ParamBinding::TensorMap(m) => format!(
                        "[\"tmap\", {}, \"{}\", {}, {:?}, {:?}]",
                        m.input,
                        m.dtype.name(),
                        jagged_codegen::launch::swizzle_bytes(m.swizzle),
                        m.box_dim,
                        m.eval_dims(&sizes)
                    ),
                })
                .collect();
            launches.push(format!(
                "{{\"entry\": \"{}\", \"grid\": {}, \"block\": {}, \"params\": [{}]}}",
                l.entry,
                l.grid.eval(&sizes),
                l.block,
                params.join(", ")
            ));
        }
        let tol = match spec.dtype {
            DType::F32 => 1e-5,
            DType::F16 => 2e-3,
            _ => 1e-2,
        };
        let sep = if self.json.is_empty() { "" } else { ",\n" };
        write!(
            self.json,
            "{sep}{{\"name\": \"{} {} W={} B={batch} T={total} max_len={max_len}\", \"ptx\": \"c{id}.ptx\", \"check\": {check}, \"tol\": {tol}, \"bytes\": {moved_bytes}, \"inputs\": [{}], \"outputs\": [{}], \"scratch\": [{}], \"launches\": [{}]}}",
            graph.name(),
            arch,
            spec.row_width(),
            inputs_json.join(", "),
            outputs_json.join(", "),
            scratch.join(", "),
            launches.join(", ")
        )?;
        Ok(())
    }
}

fn graphs(dtype: DType, offsets: DType, inner: &[usize]) -> Result<Vec<Graph>, BoxError> {
    let s = JaggedSpec {
        dtype,
        offsets,
        inner: inner.to_vec(),
    };
    Ok(vec![
        ops::complete_cumsum(offsets)?,
        ops::jagged_to_padded_dense(&s)?,
        ops::dense_to_jagged(&s)?,
        ops::jagged_dense_elementwise_mul(&s)?,
        ops::jagged_softmax(&s)?,
        ops::jagged_reduce(&s, ReduceOp::Sum)?,
        ops::jagged_reduce(&s, ReduceOp::Max)?,
        ops::masked_select_jagged(&s, DType::U8)?,
    ])
}

fn main() -> Result<(), BoxError> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: gpu_cases <out-dir>")?;
    std::fs::create_dir_all(&dir)?;
    let mut w = Writer {
        dir: dir.clone(),
        json: String::new(),
        count: 0,
    };
    // Correctness: mixed layouts incl. empty sequences, length 1, > max_len; B = 0.
    let mut rng = Rng(42);
    for arch in Arch::ALL {
        for (dtype, offsets, inner, max_len) in [
            (DType::F32, DType::I32, vec![8], 20),
            (DType::BF16, DType::I64, vec![3, 5], 300),
            (DType::F16, DType::I32, vec![6], 40),
        ] {
            for g in graphs(dtype, offsets, &inner)? {
                let mut lengths: Vec<usize> = (0..40)
                    .map(|_| rng.below(max_len as u64 + 30) as usize)
                    .collect();
                lengths[3] = 0;
                lengths[7] = 1;
                w.case(&g, arch, &lengths, max_len, true)?;
                w.case(&g, arch, &[], max_len, true)?;
            }
        }
    }
    // Performance: B = 2048 sequences of 0..1024 rows (T ~ 1M), max_len 1024.
    let lengths: Vec<usize> = (0..2048).map(|_| rng.below(1025) as usize).collect();
    for (dtype, inner) in [
        (DType::F32, vec![128]),
        (DType::BF16, vec![128]),
        (DType::F32, vec![8]),
    ] {
        for g in graphs(dtype, DType::I32, &inner)?.iter().skip(1) {
            w.case(g, Arch::Sm90a, &lengths, 1024, false)?;
        }
    }
    // Short sequences (warp-per-sequence kernels): B = 32768 of 0..128 rows, max_len 128.
    let short: Vec<usize> = (0..32768).map(|_| rng.below(129) as usize).collect();
    for g in graphs(DType::F32, DType::I32, &[64])?.iter().skip(1) {
        w.case(g, Arch::Sm90a, &short, 128, false)?;
    }
    let many: Vec<usize> = (0..(1 << 20)).map(|_| rng.below(100) as usize).collect();
    w.case(
        &ops::complete_cumsum(DType::I64)?,
        Arch::Sm90a,
        &many,
        1024,
        false,
    )?;
    std::fs::write(
        Path::new(&dir).join("cases.json"),
        format!("[\n{}\n]\n", w.json),
    )?;
    println!("wrote {} cases to {}", w.count, dir.display());
    Ok(())
}

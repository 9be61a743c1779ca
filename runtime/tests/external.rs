//! The pieces of a run on memory the runtime does not own (PyTorch's CUDA
//! tensors, through the Python package): `bind_external` (sizes from the
//! inputs' shapes, no offsets read) and `launch_plan` (allocation through a
//! caller's `LaunchTarget`, parameter binding, launches, compaction rows),
//! checked end to end on the emulator against the reference evaluator, with
//! a target that allocates zeroed runtime buffers as a caller would.

use std::collections::BTreeMap;
use std::sync::Arc;

use jagged_codegen::{Arch, Spec};
use jagged_ir::bind::InputDesc;
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrValue, DType, DenseTensor, Graph, ReduceOp};
use jagged_runtime::{
    BackendKind, BufferRole, DeviceBuffer, DeviceTensor, GraphRunError, InputCheck, KernelArg,
    KernelCache, LaunchDims, LaunchTarget, ModuleId, Runtime, RuntimeError, bind_external,
    launch_plan,
};

/// The emulator's buffers as a caller's memory; records what it is asked.
struct Recorder<'a> {
    rt: &'a mut Runtime,
    module: ModuleId,
    allocs: Vec<(DType, usize, BufferRole)>,
    launches: usize,
    reads: usize,
}

impl LaunchTarget for Recorder<'_> {
    type Buffer = DeviceBuffer;

    fn alloc(
        &mut self,
        dtype: DType,
        elems: usize,
        role: BufferRole,
    ) -> Result<DeviceBuffer, GraphRunError> {
        self.allocs.push((dtype, elems, role));
        Ok(self.rt.alloc(dtype, elems)?)
    }

    fn arg(&self, buffer: &DeviceBuffer) -> KernelArg {
        buffer.arg()
    }

    fn launch(
        &mut self,
        entry: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), GraphRunError> {
        self.launches += 1;
        Ok(self.rt.launch(self.module, entry, dims, args)?)
    }

    fn read_index(
        &mut self,
        _name: &str,
        buffer: &DeviceBuffer,
        dtype: DType,
        _elems: usize,
        index: usize,
    ) -> Result<i64, GraphRunError> {
        self.reads += 1;
        let t = self.rt.download_dense(buffer, &[buffer.len()])?.to_f64();
        assert!(dtype.is_index());
        Ok(t[index] as i64)
    }
}

fn spec(inner: &[usize], offsets: DType) -> JaggedSpec {
    JaggedSpec {
        dtype: DType::F32,
        offsets,
        inner: inner.to_vec(),
    }
}

/// `graph`'s inputs on sequences of `lengths` (offsets and lengths as
/// such, every other input a ramp; a mask every other row).
fn inputs_for(graph: &Graph, lengths: &[usize], max_len: usize) -> Vec<(String, DenseTensor)> {
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    graph
        .inputs()
        .map(|(_, name, ty)| {
            let shape: Vec<usize> = ty
                .dims
                .iter()
                .map(|d| match d {
                    jagged_ir::Dim::Ragged(_) => total,
                    jagged_ir::Dim::Batch => lengths.len(),
                    jagged_ir::Dim::BatchPlusOne => lengths.len() + 1,
                    jagged_ir::Dim::MaxLen => max_len,
                    jagged_ir::Dim::Static(n) => *n,
                })
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f64> = match name {
                "offsets" => offsets.clone(),
                "lengths" => lengths.iter().map(|&l| l as f64).collect(),
                "mask" => (0..n).map(|i| (i % 2) as f64).collect(),
                _ => (0..n).map(|i| (i % 7) as f64 * 0.25 - 0.5).collect(),
            };
            let t = DenseTensor::from_f64(ty.dtype, shape, &values).expect("input");
            (name.to_string(), t)
        })
        .collect()
}

/// Runs `graph` through `bind_external` + `launch_plan` on the emulator;
/// checks the outputs against the reference evaluator and returns the
/// checks left to the caller and whether `total_rows` was asked.
fn run_external(graph: &Graph, lengths: &[usize]) -> (Vec<InputCheck>, bool, usize) {
    const MAX_LEN: usize = 4;
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    let inputs = inputs_for(graph, lengths, MAX_LEN);
    let attrs: Vec<(&str, AttrValue)> = [("max_len", AttrValue::Index(MAX_LEN))]
        .into_iter()
        .filter(|(n, _)| graph.attr(n).is_some())
        .collect();
    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let expected = jagged_ir::evaluate(graph, &named, &attrs).expect("reference");
    let device: Vec<(String, DeviceTensor)> = inputs
        .iter()
        .map(|(n, t)| (n.clone(), rt.upload_tensor(t).expect("upload")))
        .collect();
    let described: Vec<InputDesc<'_>> = inputs
        .iter()
        .map(|(n, t)| InputDesc {
            name: n,
            dtype: t.dtype(),
            shape: t.shape(),
        })
        .collect();
    let mut asked = false;
    let total: usize = lengths.iter().sum();
    let binding = bind_external(graph, &described, &attrs, |name| {
        assert_eq!(name, "offsets");
        asked = true;
        Ok(total)
    })
    .expect("bind");
    let spec = Spec::for_graph(graph, MAX_LEN as u64, Arch::Sm80).expect("spec");
    let (kernel, module) = rt.compile_graph(graph, &spec).expect("compile");
    let args: Vec<KernelArg> = graph
        .inputs()
        .map(|(_, name, _)| {
            let (_, t) = device.iter().find(|(n, _)| n == name).expect("input");
            t.buffer.arg()
        })
        .collect();
    let mut target = Recorder {
        rt: &mut rt,
        module,
        allocs: Vec::new(),
        launches: 0,
        reads: 0,
    };
    let planned = launch_plan(
        graph,
        &kernel,
        &binding.sizes,
        &binding.attrs,
        &args,
        &mut target,
    )
    .expect("launch");
    assert_eq!(target.launches, kernel.launches.len());
    let (allocs, reads) = (target.allocs.clone(), target.reads);
    assert_eq!(allocs.len(), kernel.outputs.len() + kernel.scratch.len());
    let mut got = BTreeMap::new();
    for (name, buffer, shape) in planned.outputs {
        let elems: usize = shape.iter().product();
        let all = rt
            .download_dense(&buffer, &[buffer.len()])
            .expect("download");
        let used = DenseTensor::from_f64(all.dtype(), shape, &all.to_f64()[..elems]).expect("used");
        got.insert(name, used);
    }
    assert_eq!(got.len(), expected.len());
    for (name, want) in &expected {
        let have = &got[name];
        assert_eq!(have.shape(), want.shape(), "{} '{name}'", graph.name());
        let (a, b) = (have.to_f64(), want.to_f64());
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{} '{name}': {a:?} vs {b:?}",
                graph.name()
            );
        }
    }
    (binding.checks, asked, reads)
}

#[test]
fn external_runs_match_the_reference_without_reading_offsets() {
    let offsets = |rows| {
        vec![InputCheck::Offsets {
            name: "offsets".to_string(),
            rows,
        }]
    };
    let graphs = [
        ops::jagged_to_padded_dense(&spec(&[2, 3], DType::I32)),
        ops::jagged_dense_elementwise_mul(&spec(&[4], DType::I64)),
        ops::jagged_softmax(&spec(&[3], DType::I32)),
        ops::jagged_reduce(&spec(&[3], DType::I64), ReduceOp::Mean),
    ];
    for lengths in [&[][..], &[0, 0], &[3, 0, 6, 1]] {
        let total: usize = lengths.iter().sum();
        for graph in &graphs {
            let graph = graph.as_ref().expect("graph");
            let (checks, asked, reads) = run_external(graph, lengths);
            assert_eq!(checks, offsets(total), "{}", graph.name());
            assert!(!asked && reads == 0, "{} synchronized", graph.name());
        }
    }
}

#[test]
fn external_runs_read_only_what_the_data_decides() {
    let lengths = [3, 0, 6, 1];
    // dense_to_jagged: T is offsets[B] (no input has rows on the offsets).
    let graph = ops::dense_to_jagged(&spec(&[5], DType::I32)).expect("graph");
    let (checks, asked, reads) = run_external(&graph, &lengths);
    assert!(asked && reads == 0);
    assert_eq!(checks.len(), 1);
    // A compaction: one read of its offsets output's last element.
    let graph = ops::masked_select_jagged(&spec(&[2], DType::I64), DType::Bool).expect("graph");
    let (_, asked, reads) = run_external(&graph, &lengths);
    assert!(!asked && reads == 1);
    // complete_cumsum: no offsets input, a lengths check.
    let graph = ops::complete_cumsum(DType::I64).expect("graph");
    let (checks, asked, reads) = run_external(&graph, &lengths);
    assert!(!asked && reads == 0);
    assert_eq!(
        checks,
        vec![InputCheck::Lengths {
            name: "lengths".to_string(),
            dtype: DType::I64
        }]
    );
}

#[test]
fn external_launches_need_the_cuda_backend() {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    let ptx = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 p)\n{\n ret;\n}\n";
    let module = rt.load_module(ptx).expect("module");
    let dims = LaunchDims::linear(1, 32);
    // SAFETY: the emulator refuses the call before any address is used.
    let err = unsafe { rt.launch_external(module, "k", &dims, &[KernelArg::U64(0)], 0) };
    assert!(
        matches!(err, Err(RuntimeError::NeedsCuda { .. })),
        "{err:?}"
    );
    // The arguments are checked first, whatever the backend.
    // SAFETY: as above.
    let err = unsafe { rt.launch_external(module, "k", &dims, &[], 0) };
    assert!(
        matches!(err, Err(RuntimeError::BadArgument { .. })),
        "{err:?}"
    );
}

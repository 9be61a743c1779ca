//! The offsets argument of a kernel's `launch`: declared in the signature
//! (`offsets: Offsets`, under any name, before or after the jagged
//! parameters), `launch` takes it where the signature puts it; undeclared,
//! it comes just before the first jagged parameter (and the generated docs
//! list it).

use std::sync::Arc;

use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, DenseTensor, Graph};
use jagged::runtime::{BackendKind, DeviceTensor, KernelCache, Runtime};
use jagged::testing::{Rng, check_against_reference, random_inputs, rel_l2};

/// Offsets declared after the values, under their own name.
#[jagged_kernel(outputs(y))]
fn offsets_after<D>(
    x: Jagged<f32, (D,)>,
    seq_offsets: Offsets,
    w: Dense<f32, (D,)>,
    #[attr] max_len: usize,
) -> Jagged<f32, (D,)> {
    x * w + x.row_pos()
}

/// The same kernel with implicit offsets.
#[jagged_kernel(outputs(y))]
fn offsets_implicit<D>(
    x: Jagged<f32, (D,)>,
    w: Dense<f32, (D,)>,
    #[attr] max_len: usize,
) -> Jagged<f32, (D,)> {
    x * w + x.row_pos()
}

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

fn check(graph: &Graph, seed: u64) {
    let mut rt = runtime();
    check_against_reference(graph, &mut rt, 5, &[], &mut Rng::new(seed))
        .unwrap_or_else(|e| panic!("{}: {e}\n{graph}", graph.name()));
}

#[test]
fn declared_offsets_keep_their_name_and_match_the_reference() {
    let g = offsets_after::graph(3, DType::I32).expect("graph");
    let names: Vec<&str> = g.inputs().map(|(_, n, _)| n).collect();
    assert_eq!(names, ["seq_offsets", "x", "w"], "{g}");
    check(&g, 31);
}

#[test]
fn launch_takes_the_offsets_where_the_signature_declares_them() {
    let mut rt = runtime();
    let lengths = [3, 0, 7, 1];
    let g = offsets_after::graph(2, DType::I64).expect("graph");
    let inputs = random_inputs(&g, &lengths, 5, 2.0, &mut Rng::new(32));
    let host = |name: &str| -> &DenseTensor {
        &inputs.iter().find(|(n, _)| n == name).expect("an input").1
    };
    let dev = |rt: &mut Runtime, name: &str| -> DeviceTensor {
        rt.upload_tensor(host(name)).expect("upload")
    };
    let (x, o, w) = (
        dev(&mut rt, "x"),
        dev(&mut rt, "seq_offsets"),
        dev(&mut rt, "w"),
    );
    let after = offsets_after::launch(&mut rt, &x, &o, &w, 5).expect("launch");
    let implicit = offsets_implicit::launch(&mut rt, &o, &x, &w, 5).expect("launch");
    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let want =
        jagged::ir::evaluate(&g, &named, &[("max_len", AttrValue::Index(5))]).expect("reference");
    for out in [after, implicit] {
        let got = rt.download_tensor(&out).expect("download");
        assert!(rel_l2(&got.to_f64(), &want["y"].to_f64()) < 1e-6);
    }
}

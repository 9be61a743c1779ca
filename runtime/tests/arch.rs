//! The arch kernels are compiled for: `Runtime::set_arch` and `JAGGED_ARCH`
//! select it (the compiled kernel's PTX `.target` says which), the emulator
//! runs either, and a value naming no arch is a typed error naming the
//! variable and the value. One test: it sets the process's environment, which
//! no other thread of this test binary reads.

use std::sync::Arc;

use jagged_codegen::{Arch, Spec};
use jagged_ir::DType;
use jagged_ir::ops::{self, JaggedSpec};
use jagged_runtime::{ARCH_ENV, BackendKind, KernelCache, Runtime, RuntimeError};

/// The `.target` line of the kernel `rt` compiles for its preferred arch.
fn compiled_target(rt: &mut Runtime) -> String {
    let graph = ops::jagged_softmax(&JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: vec![4],
    })
    .expect("graph");
    let spec = Spec::for_graph(&graph, 8, rt.preferred_arch()).expect("spec");
    let (kernel, _) = rt
        .compile_graph(&graph, &spec)
        .expect("compiled and loaded");
    kernel
        .ptx
        .lines()
        .find(|line| line.trim_start().starts_with(".target"))
        .expect("a .target line")
        .trim()
        .to_string()
}

fn emu() -> Result<Runtime, RuntimeError> {
    let mut rt = Runtime::with_backend(BackendKind::Emu)?;
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    Ok(rt)
}

/// Sets `JAGGED_ARCH` (or removes it for `None`).
fn set_env(value: Option<&str>) {
    // SAFETY: this binary's only test is the one thread that touches the
    // environment (see the module doc).
    unsafe {
        match value {
            Some(v) => std::env::set_var(ARCH_ENV, v),
            None => std::env::remove_var(ARCH_ENV),
        }
    }
}

#[test]
fn the_arch_override_selects_the_compiled_target() {
    set_env(None);
    let mut rt = emu().expect("emulator");
    assert_eq!(rt.preferred_arch(), Arch::Sm80);
    assert_eq!(compiled_target(&mut rt), ".target sm_80");
    rt.set_arch(Some(Arch::Sm90a))
        .expect("the emulator runs sm_90a");
    assert_eq!(compiled_target(&mut rt), ".target sm_90a");
    rt.set_arch(None).expect("back to the default");
    assert_eq!(compiled_target(&mut rt), ".target sm_80");

    // The environment variable, in every constructor.
    set_env(Some("sm_90a"));
    let mut rt = emu().expect("emulator");
    assert_eq!(rt.preferred_arch(), Arch::Sm90a);
    assert_eq!(compiled_target(&mut rt), ".target sm_90a");
    set_env(Some(""));
    assert_eq!(emu().expect("emulator").preferred_arch(), Arch::Sm80);

    set_env(Some("sm_75"));
    let err = match emu() {
        Ok(_) => panic!("JAGGED_ARCH=sm_75 accepted"),
        Err(err) => err,
    };
    assert!(
        matches!(&err, RuntimeError::UnknownArch { setting, value }
            if setting == "JAGGED_ARCH" && value == "sm_75"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("JAGGED_ARCH") && text.contains("sm_75"),
        "{text}"
    );
    set_env(None);
}

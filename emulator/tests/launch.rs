//! Launch-level behaviour: the kernel-parameter layout (as CUDA lays it out), scalar
//! parameters of every width, launch-dimension checks and the whole-launch budget.
//! Every expected value is derived by hand from the PTX ISA / CUDA rules noted at each.

use jagged_emu::{Device, EmuError, KernelArg, LaunchConfig, Module};

const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

fn parse(ptx: &str) -> Module {
    Module::parse(ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"))
}

fn one_thread() -> LaunchConfig {
    LaunchConfig {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        dynamic_shared_bytes: 0,
    }
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Five `.u32` parameters then a `.ptr .align 1` pointer (what Triton emits for a pointer
/// after scalars). CUDA places the pointer at offset 24 (its natural 8-byte alignment), not
/// 20: `.align` on a `.ptr` parameter describes the memory it points to. The kernel reads
/// the pointer both by name and at `[a + 24]`, and stores `a + e` through each.
#[test]
fn ptr_param_align_1_after_odd_u32_params_sits_at_offset_24() {
    let ptx = format!(
        "{HEADER}
.visible .entry k(
    .param .u32 a, .param .u32 b, .param .u32 c, .param .u32 d, .param .u32 e,
    .param .u64 .ptr .global .align 1 out
)
{{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u32 %r1, [a];
    ld.param.u32 %r2, [e];
    add.u32 %r3, %r1, %r2;
    ld.param.u64 %rd1, [out];
    ld.param.u64 %rd2, [a+24];
    st.global.u32 [%rd1], %r3;
    st.global.u32 [%rd2+4], %r3;
    ret;
}}
"
    );
    let module = parse(&ptx);
    let mut dev = Device::new();
    let out = dev.alloc(8);
    let args = [
        KernelArg::U32(10),
        KernelArg::U32(2),
        KernelArg::U32(3),
        KernelArg::U32(4),
        KernelArg::U32(5),
        KernelArg::Ptr(out),
    ];
    if let Err(e) = dev.launch(&module, "k", &one_thread(), &args) {
        panic!("launch failed: {e}");
    }
    assert_eq!(dev.read(out, 8).map(|b| words(&b)).ok(), Some(vec![15, 15]));
}

/// `.align` on a non-pointer parameter still aligns the parameter itself.
#[test]
fn align_on_a_byte_array_param_aligns_the_param() {
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u32 a, .param .align 8 .b8 s[8], .param .u64 out)
{{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u32 %r1, [a+8];
    ld.param.u32 %r2, [s+4];
    ld.param.u64 %rd1, [out];
    st.global.v2.u32 [%rd1], {{%r1, %r2}};
    ret;
}}
"
    );
    let module = parse(&ptx);
    let mut dev = Device::new();
    let out = dev.alloc(8);
    // There is no byte-array argument kind: pass the 8 bytes as a u64.
    let args = [
        KernelArg::U32(1),
        KernelArg::U64(0x0000_0007_0000_0006),
        KernelArg::Ptr(out),
    ];
    if let Err(e) = dev.launch(&module, "k", &one_thread(), &args) {
        panic!("launch failed: {e}");
    }
    assert_eq!(dev.read(out, 8).map(|b| words(&b)).ok(), Some(vec![6, 7]));
}

/// A parameter array too large for the parameter space is refused, not truncated.
#[test]
fn huge_param_array_is_rejected_not_truncated() {
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .b8 s[4294967296])
{{
    ret;
}}
"
    );
    match Module::parse(&ptx) {
        Err(EmuError::Unsupported { what, .. }) => assert!(what.contains("`s`"), "{what}"),
        other => panic!("expected an unsupported-parameter error, got {other:?}"),
    }
}

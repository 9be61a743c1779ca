//! Launch-level behaviour: the kernel-parameter layout (as CUDA lays it out), scalar
//! parameters of every width, launch-dimension checks and the whole-launch budget.
//! Every expected value is derived by hand from the PTX ISA / CUDA rules noted at each.

use jagged_emu::{Budget, Device, EmuError, KernelArg, LaunchConfig, Module};
use std::time::{Duration, Instant};

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

/// 1- and 2-byte scalar parameters: laid out at their natural alignment (a@0 b@1 c@2
/// d@4 e@6 f@8 g@10 h@12, the pointer at 16) and read with `ld.param` of their type,
/// sign-extended for `.s8`/`.s16` into the 32-bit destination.
#[test]
fn one_and_two_byte_scalar_params_are_passed_and_loaded() {
    let ptx = format!(
        "{HEADER}
.visible .entry k(
    .param .u8 a, .param .s8 b, .param .u16 c, .param .s16 d,
    .param .f16 e, .param .bf16 f, .param .b8 g, .param .b16 h,
    .param .u64 .ptr .global .align 1 out
)
{{
    .reg .pred %p<2>;
    .reg .b16 %rs<4>;
    .reg .b32 %r<12>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;
    ld.param.u8 %r1, [a];
    ld.param.s8 %r2, [b];
    ld.param.u16 %r3, [c];
    ld.param.s16 %r4, [d];
    ld.param.b16 %rs1, [e];
    cvt.f32.f16 %f1, %rs1;
    ld.param.b16 %rs2, [f];
    cvt.f32.bf16 %f2, %rs2;
    ld.param.u8 %rs3, [g];
    and.b16 %rs3, %rs3, 1;
    setp.eq.b16 %p1, %rs3, 1;
    selp.u32 %r5, 11, 22, %p1;
    ld.param.u16 %r6, [h];
    ld.param.u64 %rd1, [a+16];
    st.global.v4.u32 [%rd1], {{%r1, %r2, %r3, %r4}};
    st.global.v2.f32 [%rd1+16], {{%f1, %f2}};
    st.global.v2.u32 [%rd1+24], {{%r5, %r6}};
    ret;
}}
"
    );
    let module = parse(&ptx);
    let mut dev = Device::new();
    let out = dev.alloc(32);
    let args = [
        KernelArg::U8(200),
        KernelArg::I8(-3),
        KernelArg::U16(60000),
        KernelArg::I16(-300),
        KernelArg::F16(half::f16::from_f32(1.5)),
        KernelArg::BF16(half::bf16::from_f32(-2.25)),
        KernelArg::U8(1),
        KernelArg::U16(0xBEEF),
        KernelArg::Ptr(out),
    ];
    if let Err(e) = dev.launch(&module, "k", &one_thread(), &args) {
        panic!("launch failed: {e}");
    }
    assert_eq!(
        dev.read(out, 32).map(|b| words(&b)).ok(),
        Some(vec![
            200,
            (-3i32) as u32,
            60000,
            (-300i32) as u32,
            1.5f32.to_bits(),
            (-2.25f32).to_bits(),
            11,
            0xBEEF
        ])
    );
}

/// A 1-byte argument for a 2-byte parameter, or an integer for a `.f16`, is refused.
#[test]
fn small_param_size_and_float_mismatches_are_rejected() {
    let ptx =
        format!("{HEADER}\n.visible .entry k(.param .u16 a, .param .f16 b)\n{{\n    ret;\n}}\n");
    let module = parse(&ptx);
    let mut dev = Device::new();
    let half = KernelArg::F16(half::f16::from_f32(1.0));
    for (args, needle) in [
        ([KernelArg::U8(1), half], "argument 0"),
        ([KernelArg::U16(1), KernelArg::U16(1)], "argument 1"),
    ] {
        match dev.launch(&module, "k", &one_thread(), &args) {
            Err(EmuError::BadLaunch(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected a bad launch, got {other:?}"),
        }
    }
    assert!(
        dev.launch(&module, "k", &one_thread(), &[KernelArg::U16(1), half])
            .is_ok()
    );
}

fn empty_kernel() -> Module {
    parse(&format!(
        "{HEADER}\n.visible .entry k(.param .u64 out)\n{{\n    ret;\n}}\n"
    ))
}

/// `--grid 2147483648,2147483648,4` used to wrap the CTA count to 0 and run nothing.
#[test]
fn grid_2_pow_31_squared_by_4_is_rejected_not_wrapped() {
    let module = empty_kernel();
    let mut dev = Device::new();
    let out = dev.alloc(4);
    let cfg = LaunchConfig {
        grid: [1 << 31, 1 << 31, 4],
        block: [32, 1, 1],
        dynamic_shared_bytes: 0,
    };
    match dev.launch(&module, "k", &cfg, &[KernelArg::Ptr(out)]) {
        Err(EmuError::GridDim {
            axis: 'x',
            value,
            max,
            ..
        }) => assert_eq!((value, max), (1 << 31, (1 << 31) - 1)),
        other => panic!("expected a grid-size error, got {other:?}"),
    }
}

#[test]
fn grid_and_block_dims_follow_cuda_limits() {
    let cfg = |grid: [u32; 3], block: [u32; 3]| LaunchConfig {
        grid,
        block,
        dynamic_shared_bytes: 0,
    };
    // The largest valid shapes.
    assert_eq!(
        cfg([(1 << 31) - 1, 65535, 65535], [1024, 1, 1])
            .validate()
            .ok(),
        Some((((1u64 << 31) - 1) * 65535 * 65535, 1024))
    );
    assert_eq!(cfg([1, 1, 1], [1, 1, 64]).validate().ok(), Some((1, 64)));
    assert_eq!(cfg([1, 1, 1], [16, 64, 1]).validate().ok(), Some((1, 1024)));
    for (grid, axis, value) in [
        ([0, 1, 1], 'x', 0),
        ([1, 65536, 1], 'y', 65536),
        ([1, 1, 0], 'z', 0),
        ([1, 1, 65536], 'z', 65536),
    ] {
        match cfg(grid, [1, 1, 1]).validate() {
            Err(EmuError::GridDim {
                axis: a, value: v, ..
            }) => {
                assert_eq!((a, v), (axis, value), "{grid:?}")
            }
            other => panic!("{grid:?}: expected a grid-size error, got {other:?}"),
        }
    }
    for (block, axis, value) in [
        ([1025, 1, 1], Some('x'), 1025),
        ([1, 0, 1], Some('y'), 0),
        ([1, 1, 65], Some('z'), 65),
        ([1024, 1, 2], None, 2048),
        ([64, 64, 1], None, 4096),
    ] {
        match cfg([1, 1, 1], block).validate() {
            Err(EmuError::BlockDim {
                axis: a, value: v, ..
            }) => {
                assert_eq!((a, v), (axis, value), "{block:?}")
            }
            other => panic!("{block:?}: expected a block-size error, got {other:?}"),
        }
    }
}

#[test]
fn absurd_allocations_are_errors_not_wraps() {
    let mut dev = Device::new();
    for bytes in [usize::MAX, usize::MAX - 4095, 1 << 60] {
        match dev.try_alloc(bytes) {
            Err(EmuError::OutOfMemory { bytes: b, .. }) => assert_eq!(b, bytes as u64),
            other => panic!("{bytes}: expected out of memory, got {other:?}"),
        }
    }
    // The device still works, and allocations do not overlap.
    let a = dev.try_alloc(16).unwrap_or_else(|e| panic!("{e}"));
    let b = dev.try_upload(&[1, 2, 3]).unwrap_or_else(|e| panic!("{e}"));
    assert!(b.0 >= a.0 + 16);
    assert_eq!(dev.read(b, 3).ok(), Some(vec![1, 2, 3]));
}

#[test]
fn variables_too_large_for_their_state_space_are_rejected() {
    for decl in [
        ".shared .align 4 .b8 s[4294967296];",
        ".shared .align 4 .b32 s[1073741824];",
        ".local .align 4 .b8 l[1048576];",
    ] {
        let ptx = format!("{HEADER}\n.visible .entry k()\n{{\n    {decl}\n    ret;\n}}\n");
        match Module::parse(&ptx) {
            Err(EmuError::Unsupported { what, .. }) => {
                assert!(what.contains("does not fit"), "{decl}: {what}")
            }
            other => panic!("{decl}: expected an error, got {other:?}"),
        }
    }
    let ptx = format!(
        "{HEADER}\n.global .align 4 .b8 g[2147483648];\n.visible .entry k()\n{{\n    ret;\n}}\n"
    );
    assert!(matches!(
        Module::parse(&ptx),
        Err(EmuError::Unsupported { .. })
    ));
}

/// A kernel whose every thread spins `n` iterations (4 warp instructions each).
fn spin_kernel() -> Module {
    parse(&format!(
        "{HEADER}
.visible .entry k(.param .u64 out, .param .u32 n)
{{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    ld.param.u32 %r1, [n];
    mov.u32 %r2, 0;
LOOP:
    add.u32 %r2, %r2, 1;
    setp.lt.u32 %p1, %r2, %r1;
    @%p1 bra LOOP;
    ret;
}}
"
    ))
}

fn budget_device(max_warp_instructions: u64, max_duration: Option<Duration>) -> Device {
    let mut dev = Device::new();
    let mut options = dev.run_options();
    options.max_warp_instructions = max_warp_instructions;
    options.max_duration = max_duration;
    dev.set_run_options(options);
    dev
}

/// `--grid 4294967295` ran for hours: only each CTA had an instruction limit. A grid of
/// 2^31 - 1 one-warp CTAs (about 7 warp instructions each) must stop near the budget.
#[test]
fn huge_grid_stops_at_the_whole_launch_instruction_budget() {
    let module = spin_kernel();
    let mut dev = budget_device(100_000, None);
    let out = dev.alloc(4);
    let cfg = LaunchConfig {
        grid: [(1 << 31) - 1, 1, 1],
        block: [32, 1, 1],
        dynamic_shared_bytes: 0,
    };
    let t = Instant::now();
    match dev.launch(
        &module,
        "k",
        &cfg,
        &[KernelArg::Ptr(out), KernelArg::U32(1)],
    ) {
        Err(EmuError::LaunchBudget {
            budget,
            warp_instructions,
            kernel,
            ..
        }) => {
            assert_eq!(budget, Budget::WarpInstructions(100_000));
            assert_eq!(kernel, "k");
            assert!(warp_instructions > 100_000, "{warp_instructions}");
            // Each host thread checks every few thousand instructions.
            assert!(
                warp_instructions < 100_000 + 64 * 40_000,
                "{warp_instructions}"
            );
        }
        other => panic!("expected the launch budget to stop the launch, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

#[test]
fn long_launch_stops_at_the_wall_time_budget() {
    // One CTA spinning 2^31 iterations (minutes of emulation) with no instruction limits:
    // only the 200 ms budget stops it.
    let module = spin_kernel();
    let mut dev = budget_device(u64::MAX, Some(Duration::from_millis(200)));
    dev.set_cta_instruction_limit(u64::MAX);
    let out = dev.alloc(4);
    let t = Instant::now();
    match dev.launch(
        &module,
        "k",
        &one_thread(),
        &[KernelArg::Ptr(out), KernelArg::U32(1 << 31)],
    ) {
        Err(e @ EmuError::LaunchBudget { budget, .. }) => {
            assert_eq!(budget, Budget::Time(Duration::from_millis(200)));
            assert!(e.to_string().contains("--max-seconds"), "{e}");
        }
        other => panic!("expected the time budget to stop the launch, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

#[test]
fn launch_within_the_budget_runs_to_completion() {
    // 4 CTAs x 2 warps x (2 + 3 * 100 + 1) warp instructions = 2424 (setup: ld, mov;
    // the loop's add/setp/bra per iteration; ret). Exactly that budget is enough.
    let module = spin_kernel();
    let mut dev = budget_device(2424, Some(Duration::from_secs(600)));
    let out = dev.alloc(4);
    let cfg = LaunchConfig {
        grid: [4, 1, 1],
        block: [64, 1, 1],
        dynamic_shared_bytes: 0,
    };
    let args = [KernelArg::Ptr(out), KernelArg::U32(100)];
    match dev.launch(&module, "k", &cfg, &args) {
        Ok(s) => assert_eq!(s.warp_instructions, 4 * 2 * (2 + 3 * 100 + 1)),
        Err(e) => panic!("{e}"),
    }
    // One instruction less of budget fails.
    let mut dev = budget_device(4 * 2 * (2 + 3 * 100 + 1) - 1, None);
    let out = dev.alloc(4);
    let args = [KernelArg::Ptr(out), KernelArg::U32(100)];
    assert!(matches!(
        dev.launch(&module, "k", &cfg, &args),
        Err(EmuError::LaunchBudget { .. })
    ));
}

#[test]
fn default_launch_budget_is_finite() {
    let o = jagged_emu::RunOptions::default();
    assert_eq!(o.max_warp_instructions, 1 << 36);
    assert_eq!(o.max_duration, Some(Duration::from_secs(600)));
    assert!(!o.strict_races);
}

#[test]
fn absurd_register_and_parameter_counts_are_rejected() {
    // 2^32 registers in one declaration would exhaust host memory while parsing.
    let ptx =
        format!("{HEADER}\n.visible .entry k()\n{{\n    .reg .b32 %r<4294967296>;\n    ret;\n}}\n");
    match Module::parse(&ptx) {
        Err(EmuError::Unsupported { what, .. }) => assert!(what.contains("registers"), "{what}"),
        other => panic!("expected an unsupported error, got {other:?}"),
    }
    // Many declarations adding up.
    let decls = "    .reg .b32 %r<65536>;\n    .reg .b32 %s<65536>;\n    .reg .b32 %t<2>;\n";
    let ptx = format!("{HEADER}\n.visible .entry k()\n{{\n{decls}    ret;\n}}\n");
    match Module::parse(&ptx) {
        Err(EmuError::Unsupported { what, .. }) => assert!(what.contains("registers"), "{what}"),
        other => panic!("expected an unsupported error, got {other:?}"),
    }
    // Parameters add up to more than CUDA's 32764 bytes.
    let ptx = format!(
        "{HEADER}\n.visible .entry k(.param .b8 a[20000], .param .b8 b[20000])\n{{\n    ret;\n}}\n"
    );
    match Module::parse(&ptx) {
        Err(EmuError::Unsupported { what, .. }) => assert!(what.contains("40000"), "{what}"),
        other => panic!("expected an unsupported error, got {other:?}"),
    }
    // The largest valid ones parse.
    let ptx = format!(
        "{HEADER}\n.visible .entry k(.param .b8 a[32764])\n{{\n    .reg .b32 %r<65536>;\n    ret;\n}}\n"
    );
    assert!(Module::parse(&ptx).is_ok());
}

/// PTX scopes labels to their `{ }` block (Triton's inline `mbarrier.try_wait` loops
/// define `waitLoop:` once per block): each branch goes to its own block's label, an
/// enclosing block's label stays visible, and a label twice in one block is an error.
#[test]
fn labels_are_scoped_to_their_block() {
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u64 out)
{{
    .reg .b32 %r<2>;
    .reg .b64 %rd<2>;
    mov.u32 %r1, 0;
    {{
        bra.uni L;
        add.u32 %r1, %r1, 100;
    L:
        add.u32 %r1, %r1, 1;
    }}
    {{
        bra.uni L;
        add.u32 %r1, %r1, 1000;
    L:
        add.u32 %r1, %r1, 2;
        bra.uni DONE;
    }}
    add.u32 %r1, %r1, 10000;
DONE:
    ld.param.u64 %rd1, [out];
    st.global.u32 [%rd1], %r1;
    ret;
}}
"
    );
    let module = parse(&ptx);
    let mut dev = Device::new();
    let out = dev.alloc(4);
    dev.launch(&module, "k", &one_thread(), &[KernelArg::Ptr(out)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(words(&dev.read(out, 4).unwrap()), [3]);

    let twice = format!("{HEADER}\n.visible .entry k()\n{{\n{{\nL:\n ret;\nL:\n ret;\n}}\n}}\n");
    let err = Module::parse(&twice).expect_err("a label twice in one block");
    assert!(err.to_string().contains("defined twice"), "{err}");
}

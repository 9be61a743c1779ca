//! Shared-memory races that store (nearly) the value already there: two warps write
//! one shared word between barriers. When the two values are equal, or floats at most
//! `RACE_ULPS` ulps apart, the race cannot change results beyond an ulp (Triton's
//! replicated reductions do this): the launch succeeds with a warning, unless
//! `RunOptions::strict_races`. Any other race stays an error.

use jagged_emu::{
    CheckKind, CheckReport, Device, EmuError, KernelArg, LaunchConfig, LaunchStats, Module,
    RunOptions, Space,
};

/// Lane 0 of warp 0 stores `va`, lane 0 of warp 1 stores `vb` to the same shared word
/// with `st.shared.<ty>` (no barrier between them); after a barrier thread 0 copies the
/// word to `out`.
fn race_ptx(ty: &str) -> String {
    format!(
        r#".version 8.0
.target sm_80
.address_size 64
.visible .entry k(.param .u64 out, .param .u32 va, .param .u32 vb)
{{
    .reg .pred %p<3>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<2>;
    .shared .align 4 .b8 s[4];
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r1, [va];
    ld.param.u32 %r2, [vb];
    mov.u32 %r3, %tid.x;
    mov.u32 %r6, s;
    and.b32 %r4, %r3, 31;
    setp.ne.u32 %p1, %r4, 0;
    @%p1 bra DONE;
    setp.lt.u32 %p2, %r3, 32;
    selp.b32 %r5, %r1, %r2, %p2;
    st.shared.{ty} [%r6], %r5; // RACE
DONE:
    bar.sync 0;
    setp.ne.u32 %p1, %r3, 0;
    @%p1 bra END;
    ld.shared.u32 %r7, [%r6];
    st.global.u32 [%rd1], %r7;
END:
    ret;
}}
"#
    )
}

/// 1-based line of the racing store.
fn race_line(ptx: &str) -> u32 {
    ptx.lines()
        .position(|l| l.contains("// RACE"))
        .map_or(0, |i| i as u32 + 1)
}

/// Runs the race kernel (2 warps) and returns the launch result and the word stored.
fn run(ty: &str, va: u32, vb: u32, strict: bool) -> (Result<LaunchStats, EmuError>, u32) {
    let module = Module::parse(&race_ptx(ty)).unwrap_or_else(|e| panic!("{e}"));
    let mut dev = Device::new();
    let mut options: RunOptions = dev.run_options();
    options.strict_races = strict;
    dev.set_run_options(options);
    let out = dev.alloc(4);
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [64, 1, 1],
        dynamic_shared_bytes: 0,
    };
    let args = [KernelArg::Ptr(out), KernelArg::U32(va), KernelArg::U32(vb)];
    let r = dev.launch(&module, "k", &cfg, &args);
    let word = dev
        .read(out, 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or_else(|e| panic!("{e}"));
    (r, word)
}

/// The single warning of a launch that must have succeeded with one.
fn one_warning(r: Result<LaunchStats, EmuError>) -> CheckReport {
    match r {
        Ok(stats) => {
            assert_eq!(stats.warnings.len(), 1, "{:?}", stats.warnings);
            stats.warnings[0].clone()
        }
        Err(e) => panic!("expected a warning, got the error: {e}"),
    }
}

/// The single error report of a launch that must have failed the memory check.
fn one_error(r: Result<LaunchStats, EmuError>) -> CheckReport {
    match r {
        Err(EmuError::MemoryCheck(reports)) => {
            assert_eq!(reports.len(), 1, "{reports:?}");
            reports[0].clone()
        }
        other => panic!("expected a memory-check error, got {other:?}"),
    }
}

fn assert_race_at_store(r: &CheckReport, ty: &str) {
    assert_eq!(r.kind, CheckKind::SharedRace);
    assert_eq!(r.line, race_line(&race_ptx(ty)));
    assert_eq!(
        (r.space, r.address, r.size, r.write),
        (Space::Shared, 0, 4, true)
    );
    assert_eq!(r.thread, [32, 0, 0], "warp 1's lane 0 writes second");
    assert!(r.detail.contains("also written by warp 0"), "{}", r.detail);
}

const ONE: u32 = 0x3f80_0000;

#[test]
fn race_storing_floats_one_ulp_apart_is_a_warning_not_an_error() {
    let (r, word) = run("f32", ONE, ONE + 1, false);
    let w = one_warning(r);
    assert_race_at_store(&w, "f32");
    assert!(w.detail.contains("differ by 1 ulp as f32"), "{}", w.detail);
    assert!(word == ONE || word == ONE + 1, "{word:#x}");
}

#[test]
fn race_storing_floats_within_a_few_ulps_through_b32_is_a_warning() {
    // Triton stores reduction results as .b32; 4 ulps apart is still the same value.
    let w = one_warning(run("b32", ONE, ONE + 4, false).0);
    assert_race_at_store(&w, "b32");
    assert!(w.detail.contains("4 ulps as f32"), "{}", w.detail);
}

#[test]
fn race_storing_f16x2_halves_one_ulp_apart_through_b32_is_a_warning() {
    // Two f16 values 1.0 (0x3c00) and 2.0 (0x4000); the second copy is 1 ulp off in each
    // half, which as one f32 would be 65537 ulps apart.
    let w = one_warning(run("b32", 0x4000_3c00, 0x4001_3c01, false).0);
    assert!(w.detail.contains("1 ulp as 16-bit floats"), "{}", w.detail);
}

#[test]
fn race_storing_the_same_value_is_a_warning() {
    let w = one_warning(run("f32", ONE, ONE, false).0);
    assert_race_at_store(&w, "f32");
    assert!(w.detail.contains("same value"), "{}", w.detail);
}

#[test]
fn strict_races_makes_the_near_value_race_fatal() {
    let e = one_error(run("f32", ONE, ONE + 1, true).0);
    assert_race_at_store(&e, "f32");
    assert!(e.detail.contains("1 ulp"), "{}", e.detail);
    let e = one_error(run("f32", ONE, ONE, true).0);
    assert_race_at_store(&e, "f32");
}

#[test]
fn race_storing_different_floats_is_still_an_error() {
    // 1.0 and 2.0 are 2^23 ulps apart.
    let e = one_error(run("f32", ONE, 0x4000_0000, false).0);
    assert_race_at_store(&e, "f32");
    // 5 ulps is more than a few.
    one_error(run("f32", ONE, ONE + 5, false).0);
    // The largest finite f32 and infinity are adjacent bit patterns but not close values.
    one_error(run("f32", 0x7f7f_ffff, 0x7f80_0000, false).0);
    // Opposite signs: +1.0 and -1.0.
    one_error(run("b32", ONE, ONE | 0x8000_0000, false).0);
}

#[test]
fn race_storing_integers_one_apart_is_still_an_error() {
    let e = one_error(run("u32", 5, 6, false).0);
    assert_race_at_store(&e, "u32");
    assert!(!e.detail.contains("ulp"), "{}", e.detail);
    // The same integer value is harmless.
    let w = one_warning(run("u32", 7, 7, false).0);
    assert_race_at_store(&w, "u32");
}

//! The race checker orders shared-memory accesses happens-before style: a barrier
//! instance orders what the warps that arrived at it did before arriving before what
//! the warps that waited on it do after it; `bar.arrive` waits for nothing, so it
//! orders nothing after it for its warp; an mbarrier phase orders its arrivals before
//! what a warp does after a wait that saw it complete. Warps that take no part in a
//! barrier are not ordered by its completion.
//!
//! Each kernel marks the access that must be reported with `// RACE`. Where a warp must
//! run an access only after some barrier completed (so that the checker sees the
//! barrier in between), it spins on a global flag another warp sets: global memory is
//! not race-checked, so the spin orders nothing for the checker.

use jagged_emu::{CheckKind, CheckReport, Device, EmuError, KernelArg, LaunchConfig, Module};

/// The kernel's prologue: `%r0` the thread, `%r1` its warp, `%r2` the shared words
/// (`s`: A at 0, B at 4, E at 8, an mbarrier at 16), `%rd1` the global flag, `%r6` 1;
/// thread 0 zeroes the words, then every thread meets at `bar.sync 0`.
const PROLOGUE: &str = r#".version 8.3
.target sm_90a
.address_size 64
.visible .entry k(.param .u64 flag)
{
    .reg .pred %p<8>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    .shared .align 8 .b8 s[32];
    mov.u32 %r0, %tid.x;
    shr.u32 %r1, %r0, 5;
    mov.u32 %r2, s;
    mov.u32 %r6, 1;
    ld.param.u64 %rd1, [flag];
    setp.ne.u32 %p1, %r0, 0;
    @%p1 bra INITED;
    mov.u32 %r3, 0;
    st.shared.u32 [%r2], %r3;
    st.shared.u32 [%r2+4], %r3;
    st.shared.u32 [%r2+8], %r3;
INITED:
    bar.sync 0;
"#;

/// Spins until the global flag is set (label `SPIN<n>`).
fn spin(n: u32) -> String {
    format!(
        "SPIN{n}:\n    ld.volatile.global.u32 %r5, [%rd1];\n    setp.eq.u32 %p7, %r5, 0;\n    @%p7 bra SPIN{n};\n"
    )
}

const SET_FLAG: &str = "    st.volatile.global.u32 [%rd1], %r6;\n";

/// Runs kernel `k` (its body after [`PROLOGUE`]) with `threads` threads.
fn run(body: &str, threads: u32) -> (String, Result<jagged_emu::LaunchStats, EmuError>) {
    let ptx = format!("{PROLOGUE}{body}END:\n    ret;\n}}\n");
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"));
    let mut dev = Device::new();
    let flag = dev.alloc(4);
    dev.write(flag, &[0; 4]).unwrap();
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [threads, 1, 1],
        dynamic_shared_bytes: 0,
    };
    let r = dev.launch(&module, "k", &cfg, &[KernelArg::Ptr(flag)]);
    (ptx, r)
}

/// The one race the launch must report: at the line marked `// RACE`.
fn one_race(ptx: &str, r: Result<jagged_emu::LaunchStats, EmuError>) -> CheckReport {
    let reports = match r {
        Err(EmuError::MemoryCheck(reports)) => reports,
        other => panic!("expected a race, got {other:?}"),
    };
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = reports[0].clone();
    assert_eq!(r.kind, CheckKind::SharedRace, "{r:?}");
    let line = ptx
        .lines()
        .position(|l| l.contains("// RACE"))
        .map(|i| i as u32 + 1);
    assert_eq!(Some(r.line), line, "{r:?}");
    r
}

fn clean(r: Result<jagged_emu::LaunchStats, EmuError>) {
    if let Err(e) = r {
        panic!("expected no finding: {e}");
    }
}

/// Warps 0 and 1 meet on `bar.sync 1, 64`, warps 2 and 3 on `bar.sync 2, 64`. Warp 0
/// writes A before its barrier; warp 1 reads A after it (ordered), warp 2 after its own
/// barrier (not ordered: a race).
#[test]
fn a_named_barrier_of_64_threads_does_not_order_the_other_64() {
    let body = r#"    setp.gt.u32 %p1, %r1, 1;
    @%p1 bra OTHERS;
    setp.ne.u32 %p2, %r1, 0;
    @%p2 bra W1;
    st.shared.u32 [%r2], %r6;
    bar.sync 1, 64;
    bra END;
W1:
    bar.sync 1, 64;
    ld.shared.u32 %r7, [%r2];
    bra END;
OTHERS:
    bar.sync 2, 64;
    setp.ne.u32 %p3, %r1, 2;
    @%p3 bra END;
    ld.shared.u32 %r7, [%r2]; // RACE
"#;
    let (ptx, r) = run(body, 128);
    let r = one_race(&ptx, r);
    assert_eq!(r.thread, [64, 0, 0], "{r:?}");
    assert!(r.detail.contains("written by warp 0"), "{}", r.detail);
    // Without warp 2's read, warp 1's read after the barrier it shares is clean.
    let body = body.replace("ld.shared.u32 %r7, [%r2]; // RACE", "");
    clean(run(&body, 128).1);
}

/// Warp 0, a producer, writes A and arrives (`bar.arrive 1, 64`); warp 1, a consumer,
/// writes B and waits (`bar.sync 1, 64`), then reads A (ordered) and sets the flag;
/// the producer spins on the flag and reads B: the consumer's write is not ordered
/// before it (the producer never waited), a race.
#[test]
fn bar_arrive_orders_the_arriving_warp_before_the_waiting_one_only() {
    let body = format!(
        r#"    setp.ne.u32 %p2, %r1, 0;
    @%p2 bra CONSUMER;
    st.shared.u32 [%r2], %r6;
    bar.arrive 1, 64;
{}    ld.shared.u32 %r7, [%r2+4]; // RACE
    bra END;
CONSUMER:
    st.shared.u32 [%r2+4], %r6;
    bar.sync 1, 64;
    ld.shared.u32 %r7, [%r2];
{SET_FLAG}"#,
        spin(0)
    );
    let (ptx, r) = run(&body, 64);
    let r = one_race(&ptx, r);
    assert_eq!(r.thread[0] / 32, 0, "{r:?}");
    assert!(r.detail.contains("written by warp 1"), "{}", r.detail);
    // The producer's write before arriving is ordered before the consumer's read.
    let body = body.replace("ld.shared.u32 %r7, [%r2+4]; // RACE", "");
    clean(run(&body, 64).1);
}

/// An mbarrier of 64 arrivals: warp 0 writes A, arrives, spins on the flag and reads E;
/// warp 1 writes E, arrives (completing the phase), waits, reads A (ordered by the
/// phase) and sets the flag. Warp 0 never waited: its read of E races with warp 1's
/// write, although the phase completed in between.
#[test]
fn an_mbarrier_phase_orders_arrivals_before_waits_only() {
    let body = format!(
        r#"    add.u32 %r8, %r2, 16;
    @%p1 bra ARMED;
    mov.u32 %r9, 64;
    mbarrier.init.shared::cta.b64 [%r8], %r9;
ARMED:
    bar.sync 0;
    setp.ne.u32 %p2, %r1, 0;
    @%p2 bra CONSUMER;
    st.shared.u32 [%r2], %r6;
    mbarrier.arrive.release.cta.shared::cta.b64 %rd2, [%r8];
{}    ld.shared.u32 %r7, [%r2+8]; // RACE
    bra END;
CONSUMER:
    st.shared.u32 [%r2+8], %r6;
    mbarrier.arrive.release.cta.shared::cta.b64 %rd2, [%r8];
    mov.u32 %r10, 0;
WAIT:
    mbarrier.try_wait.parity.shared::cta.b64 %p3, [%r8], %r10;
    @!%p3 bra WAIT;
    ld.shared.u32 %r7, [%r2];
{SET_FLAG}"#,
        spin(0)
    );
    let (ptx, r) = run(&body, 64);
    let r = one_race(&ptx, r);
    assert_eq!(r.thread[0] / 32, 0, "{r:?}");
    assert!(r.detail.contains("written by warp 1"), "{}", r.detail);
    let body = body.replace("ld.shared.u32 %r7, [%r2+8]; // RACE", "");
    clean(run(&body, 64).1);
}

/// Warp 0 writes A; warps 2 and 3 then complete `bar.sync 1, 64` and warp 3 sets the
/// flag; warp 1 spins on the flag and writes A. Warps 0 and 1 took no part in the
/// barrier: a race.
#[test]
fn an_unrelated_barrier_does_not_order_warps_outside_it() {
    let body = format!(
        r#"    setp.gt.u32 %p1, %r1, 1;
    @%p1 bra OTHERS;
    setp.ne.u32 %p2, %r1, 0;
    @%p2 bra W1;
    st.shared.u32 [%r2], %r6;
    bra END;
W1:
{}    st.shared.u32 [%r2], %r0; // RACE
    bra END;
OTHERS:
    bar.sync 1, 64;
    setp.ne.u32 %p3, %r1, 3;
    @%p3 bra END;
{SET_FLAG}"#,
        spin(0)
    );
    let (ptx, r) = run(&body, 128);
    let r = one_race(&ptx, r);
    assert_eq!(r.thread[0] / 32, 1, "{r:?}");
    assert!(r.detail.contains("also written by warp 0"), "{}", r.detail);
}

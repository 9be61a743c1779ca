//! Planted bugs: a Triton fixture's PTX is edited (a barrier deleted, a store moved past
//! the end of its buffer, a shared store or an async-copy wait removed) and the memory
//! checker must report exactly that kind of error at the edited place. The unmodified
//! fixtures must pass with the checker on.
//!
//! Edits blank a line instead of removing it, so PTX line numbers stay those of the
//! fixture file and the reports' lines can be checked.

mod triton_support;

use jagged_emu::{CheckKind, CheckReport, Device, EmuError, KernelArg, LaunchStats, Space};
use triton_support::{
    Fixture, Rng, attention_args, bf16_bytes, f32_bytes, matmul_args, poisoned, to_bf16,
};

/// Rows of the softmax launch; every row is exactly 256 floats (the kernel's block),
/// so the output buffer ends right after the last row's last element.
const ROWS: usize = 3;
const COLS: usize = 256;

/// 0-based index of the `n`-th (0-based) line of `ptx` whose code contains `pattern`.
fn nth_line(ptx: &str, pattern: &str, n: usize) -> usize {
    ptx.lines()
        .enumerate()
        .filter(|(_, l)| l.split("//").next().unwrap_or("").contains(pattern))
        .nth(n)
        .unwrap_or_else(|| panic!("fixture has no {n}-th line containing `{pattern}`"))
        .0
}

/// `ptx` with line `index` (0-based) replaced by `with`.
fn replace_line(ptx: &str, index: usize, with: &str) -> String {
    let mut lines: Vec<&str> = ptx.lines().collect();
    lines[index] = with;
    lines.join("\n") + "\n"
}

/// Runs the softmax fixture (possibly edited) on `ROWS` x `COLS` random floats.
fn run_softmax(ptx: &str) -> Result<LaunchStats, EmuError> {
    let fx = Fixture::load("softmax_rows");
    let module = fx.module(ptx);
    let mut rng = Rng::new(0x91a4_7ed0);
    let mut dev = Device::new();
    let x = dev.upload(&f32_bytes(&rng.vec(ROWS * COLS, -3.0, 3.0)));
    let y = poisoned(&mut dev, ROWS * COLS * 4);
    let args = fx.args(vec![
        KernelArg::Ptr(x),
        KernelArg::Ptr(y),
        KernelArg::I32(COLS as i32),
        KernelArg::I32(COLS as i32),
        KernelArg::I32(COLS as i32),
    ]);
    dev.launch(&module, &fx.kernel, &fx.config([ROWS as u32, 1, 1]), &args)
}

/// Runs the matmul fixture (possibly edited) on an M x 64 x 128 problem.
fn run_matmul(ptx: &str, m: usize) -> Result<LaunchStats, EmuError> {
    let fx = Fixture::load("matmul_bf16");
    let module = fx.module(ptx);
    let (n, k) = (64usize, 128usize);
    let mut rng = Rng::new(0x3a73a7);
    let mut dev = Device::new();
    let a = dev.upload(&bf16_bytes(&to_bf16(&rng.vec(m * k, -1.0, 1.0))));
    let b = dev.upload(&bf16_bytes(&to_bf16(&rng.vec(k * n, -1.0, 1.0))));
    let c = poisoned(&mut dev, m * n * 4);
    let args = fx.args(matmul_args([a, b, c], m, n, k));
    let grid = [m.div_ceil(64) as u32, 1, 1];
    dev.launch(&module, &fx.kernel, &fx.config(grid), &args)
}

/// The checker's reports of a launch that must have failed the memory check.
fn reports(result: Result<LaunchStats, EmuError>, what: &str) -> Vec<CheckReport> {
    match result {
        Err(EmuError::MemoryCheck(reports)) => {
            assert!(!reports.is_empty(), "{what}: MemoryCheck with no reports");
            reports
        }
        Err(other) => panic!("{what}: expected a memory-check failure, got: {other}"),
        Ok(_) => panic!("{what}: the planted bug was not detected"),
    }
}

fn kinds(reports: &[CheckReport]) -> Vec<CheckKind> {
    reports.iter().map(|r| r.kind).collect()
}

#[test]
fn unmodified_fixtures_pass_the_checker() {
    let softmax = Fixture::load("softmax_rows");
    if let Err(e) = run_softmax(&softmax.ptx) {
        panic!("unmodified softmax: {e}");
    }
    let matmul = Fixture::load("matmul_bf16");
    if let Err(e) = run_matmul(&matmul.ptx, 40) {
        panic!("unmodified matmul: {e}");
    }
}

#[test]
fn missing_barrier_before_cross_warp_read_is_detected() {
    // The first bar.sync separates each warp's store of its partial maximum from
    // warp 0's reads of all partials. Without it warp 0 reads slots other warps
    // write in the same barrier interval: a race, or a read before any write,
    // depending on the order the emulator runs warps in.
    let fx = Fixture::load("softmax_rows");
    let bar = nth_line(&fx.ptx, "bar.sync", 0);
    let r = reports(
        run_softmax(&replace_line(&fx.ptx, bar, "")),
        "first bar.sync deleted",
    );
    assert!(
        r.iter().all(|r| matches!(
            r.kind,
            CheckKind::SharedRace | CheckKind::UninitializedSharedRead
        )),
        "{:?}",
        kinds(&r)
    );
}

#[test]
fn missing_write_after_read_barrier_is_a_race() {
    // The third bar.sync keeps the second reduction's store to slot 0 (by warp 0)
    // after every warp's broadcast read of slot 0 from the first reduction. Without it
    // the read and the write are in one barrier interval, in different warps: a
    // write-after-read race whatever the warp order. No read is uninitialized.
    let fx = Fixture::load("softmax_rows");
    let bar = nth_line(&fx.ptx, "bar.sync", 2);
    let r = reports(
        run_softmax(&replace_line(&fx.ptx, bar, "")),
        "third bar.sync deleted",
    );
    assert!(
        r.iter().all(|r| r.kind == CheckKind::SharedRace),
        "{:?}",
        kinds(&r)
    );
    let broadcast_read = nth_line(&fx.ptx, "ld.shared.b32", 1) as u32 + 1;
    let second_store = nth_line(&fx.ptx, "st.shared.b32", 2) as u32 + 1;
    assert!(
        r.iter()
            .all(|r| r.line == broadcast_read || r.line == second_store),
        "race reported at lines {:?}, expected {broadcast_read} or {second_store}",
        r.iter().map(|r| r.line).collect::<Vec<_>>()
    );
}

#[test]
fn store_one_element_past_the_row_is_out_of_bounds() {
    // The second output store (column t + 128) moved one float further: for the last
    // row's last column that is the 4 bytes right after the output buffer.
    let fx = Fixture::load("softmax_rows");
    let store = nth_line(&fx.ptx, "st.global.b32", 1);
    let line = fx.ptx.lines().nth(store).unwrap_or_default();
    assert!(line.contains("+ 0 ]"), "unexpected store syntax: {line}");
    let edited = replace_line(&fx.ptx, store, &line.replace("+ 0 ]", "+ 4 ]"));
    let r = reports(run_softmax(&edited), "store offset +4");
    assert_eq!(r.len(), 1, "exactly one store is out of bounds: {r:?}");
    let report = &r[0];
    assert_eq!(report.kind, CheckKind::OutOfBounds);
    assert_eq!(report.line as usize, store + 1);
    assert!(report.write);
    assert_eq!(report.size, 4);
    assert_eq!(report.cta, [ROWS as u32 - 1, 0, 0]);
    assert_eq!(report.thread, [127, 0, 0]);
}

#[test]
fn read_of_never_written_shared_memory_is_detected() {
    // Delete the first st.shared (each warp's partial maximum): warp 0's reads of
    // those slots then read bytes no thread wrote.
    let fx = Fixture::load("softmax_rows");
    let store = nth_line(&fx.ptx, "st.shared.b32", 0);
    let r = reports(
        run_softmax(&replace_line(&fx.ptx, store, "")),
        "st.shared deleted",
    );
    let first_read = nth_line(&fx.ptx, "ld.shared.b32", 0) as u32 + 1;
    assert!(
        r.iter()
            .all(|r| r.kind == CheckKind::UninitializedSharedRead && r.line == first_read),
        "{:?} at lines {:?}, expected uninitialized reads at line {first_read}",
        kinds(&r),
        r.iter().map(|r| r.line).collect::<Vec<_>>()
    );
}

#[test]
fn reading_async_copies_before_waiting_is_detected() {
    // Delete every cp.async.wait_group of the pipelined matmul: ldmatrix then reads
    // shared memory whose cp.async has not been waited for.
    let fx = Fixture::load("matmul_bf16");
    let mut ptx = fx.ptx.clone();
    while let Some(i) = ptx.lines().position(|l| l.contains("cp.async.wait_group")) {
        ptx = replace_line(&ptx, i, "");
    }
    let r = reports(run_matmul(&ptx, 64), "cp.async.wait_group deleted");
    assert!(
        r.iter().any(|r| r.kind == CheckKind::PendingAsyncCopyRead),
        "{:?}",
        kinds(&r)
    );
}

#[test]
fn vector_load_off_its_alignment_is_misaligned() {
    // The first 16-byte q load of the attention kernel moved by 4 bytes: still inside
    // the buffer, but no longer 16-byte aligned.
    let fx = Fixture::load("attention_fwd");
    let load = nth_line(&fx.ptx, "ld.global.v4.b32", 0);
    let line = fx.ptx.lines().nth(load).unwrap_or_default();
    assert!(line.contains("+ 0 ]"), "unexpected load syntax: {line}");
    let edited = replace_line(&fx.ptx, load, &line.replace("+ 0 ]", "+ 4 ]"));
    let module = fx.module(&edited);
    let (queries, keys, d) = (64usize, 64usize, 64usize);
    let mut rng = Rng::new(0xa119e);
    let mut dev = Device::new();
    let mut input = |n: usize| dev.upload(&bf16_bytes(&to_bf16(&rng.vec(n, -1.0, 1.0))));
    let (q, k, v) = (input(queries * d), input(keys * d), input(keys * d));
    let o = poisoned(&mut dev, queries * d * 4);
    let args = fx.args(attention_args([q, k, v, o], keys, 0.125, d));
    let r = reports(
        dev.launch(&module, &fx.kernel, &fx.config([1, 1, 1]), &args),
        "ld.global.v4 offset +4",
    );
    assert!(
        r.iter()
            .all(|r| r.kind == CheckKind::Misaligned && r.line as usize == load + 1 && !r.write),
        "{r:?}"
    );
}

#[test]
fn async_copy_ignoring_its_mask_reads_out_of_bounds() {
    // With M = 40 the A rows 40..63 of the tile are masked: Triton gives their
    // cp.async a source size of 0 (zero fill, nothing read). Dropping the source-size
    // operand makes every copy read its 16 bytes, past the end of A.
    let fx = Fixture::load("matmul_bf16");
    let mut ptx = fx.ptx.clone();
    let mut edited = Vec::new();
    for (i, line) in fx.ptx.lines().enumerate() {
        if let Some(prefix) = line
            .strip_suffix(';')
            .filter(|_| line.contains("cp.async.cg.shared.global"))
            .and_then(|l| l.rsplit_once(", %r"))
            .map(|(p, _)| p)
        {
            ptx = replace_line(&ptx, i, &format!("{prefix};"));
            edited.push(i as u32 + 1);
        }
    }
    assert!(!edited.is_empty(), "no cp.async with a source size");
    let r = reports(run_matmul(&ptx, 40), "cp.async src-size dropped");
    // The copies that fall outside A (and, for the prefetches beyond K in the last
    // iterations, outside B) are reported where they are issued. A copy that was not
    // delivered leaves its shared bytes unwritten, so later reads of them may be
    // reported as uninitialized too; nothing else may be.
    assert!(r.iter().any(|r| r.kind == CheckKind::OutOfBounds), "{r:?}");
    for report in &r {
        match report.kind {
            CheckKind::OutOfBounds => assert!(
                !report.write && report.space == Space::Global && edited.contains(&report.line),
                "{report}"
            ),
            CheckKind::UninitializedSharedRead => {}
            _ => panic!("unexpected report: {report}"),
        }
    }
}

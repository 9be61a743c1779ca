//! The cost model (`LaunchStats::profile`): small hand-written kernels whose instruction
//! classes, global bytes and 32-byte sectors, and shared-memory wavefronts are derived
//! by hand (next to each test), never taken from the emulator's output.

use jagged_emu::{Device, DevicePtr, KernelArg, LaunchConfig, LaunchStats, Module, Profile};

/// A kernel `k(inp, out)`: `%r0` = %tid.x, `%rd1` = inp, `%rd2` = out (4 preamble
/// instructions: 2 `ld.param` (other), 1 `mov` (alu), then `body`, then `ret` (other)).
fn kernel(body: &str) -> String {
    format!(
        r#".version 8.0
.target sm_80
.address_size 64
.visible .entry k(.param .u64 inp, .param .u64 out)
{{
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .f32 %f<16>;
    .reg .b64 %rd<16>;
    .shared .align 16 .b8 smem[16384];
    ld.param.u64 %rd1, [inp];
    ld.param.u64 %rd2, [out];
    mov.u32 %r0, %tid.x;
{body}
    ret;
}}
"#
    )
}

/// Runs `body` on one CTA of `threads` threads with 64 KiB input and output buffers.
fn run(body: &str, threads: u32) -> LaunchStats {
    let ptx = kernel(body);
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"));
    let mut dev = Device::new();
    let inp = dev.upload(&vec![0u8; 65536]);
    let out = dev.alloc(65536);
    launch(&mut dev, &module, [1, 1, 1], threads, inp, out)
}

fn launch(
    dev: &mut Device,
    module: &Module,
    grid: [u32; 3],
    threads: u32,
    inp: DevicePtr,
    out: DevicePtr,
) -> LaunchStats {
    let cfg = LaunchConfig {
        grid,
        block: [threads, 1, 1],
        dynamic_shared_bytes: 0,
    };
    let stats = dev
        .launch(
            module,
            "k",
            &cfg,
            &[KernelArg::Ptr(inp), KernelArg::Ptr(out)],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.profile.warp_instructions(), stats.warp_instructions);
    assert_eq!(stats.profile.launches, 1);
    stats
}

/// Global element addresses: `%rd3` = inp + 4 * (`index`), `%rd4` = out + 4 * tid.
fn addresses(index: &str) -> String {
    format!(
        "    {index}
    mul.wide.u32 %rd5, %r1, 4;
    add.s64 %rd3, %rd1, %rd5;
    mul.wide.u32 %rd6, %r0, 4;
    add.s64 %rd4, %rd2, %rd6;
"
    )
}

#[test]
fn coalesced_f32_copy_of_1024_elements_reads_4096_bytes_in_128_sectors() {
    // 1024 threads, out[tid] = inp[tid]. Per warp: other 3 (2 ld.param, ret), alu 6
    // (mov, mov %r1, 2 mul.wide, 2 add), global 2. Each warp reads and writes 128
    // contiguous bytes: 4 sectors each way.
    let body = addresses("mov.u32 %r1, %r0;")
        + "    ld.global.f32 %f1, [%rd3];\n    st.global.f32 [%rd4], %f1;\n";
    let p = run(&body, 1024).profile;
    let want = Profile {
        launches: 1,
        alu: 32 * 6,
        global: 32 * 2,
        other: 32 * 3,
        global_read_bytes: 4096,
        global_write_bytes: 4096,
        global_read_sectors: 128,
        global_write_sectors: 128,
        ..Profile::default()
    };
    assert_eq!(p, want);
    assert_eq!(p.global_bytes(), 8192);
    assert_eq!(p.global_sector_bytes(), 8192);
}

#[test]
fn strided_and_permuted_reads_touch_the_sectors_of_their_addresses() {
    // inp[8 * tid]: a 32-byte stride, every lane its own sector (32 per warp).
    let body = addresses("shl.b32 %r1, %r0, 3;") + "    ld.global.f32 %f1, [%rd3];\n";
    let p = run(&body, 1024).profile;
    assert_eq!((p.global_read_bytes, p.global_read_sectors), (4096, 1024));
    // inp[2 * tid]: each warp spans 256 bytes, 8 sectors.
    let body = addresses("shl.b32 %r1, %r0, 1;") + "    ld.global.f32 %f1, [%rd3];\n";
    let p = run(&body, 1024).profile;
    assert_eq!((p.global_read_bytes, p.global_read_sectors), (4096, 256));
    // inp[1023 - tid]: lanes in descending address order, still 4 sectors per warp.
    let body = addresses("sub.u32 %r1, 1023, %r0;") + "    ld.global.f32 %f1, [%rd3];\n";
    let p = run(&body, 1024).profile;
    assert_eq!((p.global_read_bytes, p.global_read_sectors), (4096, 128));
    // inp[tid % 8 * 8]: 8 sectors, each touched by 4 lanes in turn (not in order).
    let body = addresses("and.b32 %r2, %r0, 7;\n    shl.b32 %r1, %r2, 3;")
        + "    ld.global.f32 %f1, [%rd3];\n";
    let p = run(&body, 32).profile;
    assert_eq!((p.global_read_bytes, p.global_read_sectors), (128, 8));
    // Every lane reads inp[0]: one sector, 128 bytes requested.
    let body = addresses("mov.u32 %r1, 0;") + "    ld.global.f32 %f1, [%rd3];\n";
    let p = run(&body, 32).profile;
    assert_eq!((p.global_read_bytes, p.global_read_sectors), (128, 1));
}

#[test]
fn vector_and_predicated_global_accesses() {
    // v4.f32 loads of inp[4 * tid]: 16 bytes per lane, 512 contiguous bytes per warp.
    let body = "    shl.b32 %r1, %r0, 4;\n    cvt.u64.u32 %rd5, %r1;\n    add.s64 %rd3, %rd1, %rd5;\n    ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd3];\n";
    let p = run(body, 64).profile;
    assert_eq!((p.global_read_bytes, p.global_read_sectors), (1024, 32));
    // Only lanes below 8 store: 8 lanes x 4 bytes, one sector.
    let body = addresses("mov.u32 %r1, %r0;")
        + "    setp.lt.u32 %p1, %r0, 8;\n    @%p1 st.global.f32 [%rd4], %f1;\n";
    let p = run(&body, 32).profile;
    assert_eq!((p.global_write_bytes, p.global_write_sectors), (32, 1));
    // A warp whose lanes all skip the store still issues it, moving nothing.
    let body = addresses("mov.u32 %r1, %r0;")
        + "    setp.lt.u32 %p1, %r0, 0;\n    @%p1 st.global.f32 [%rd4], %f1;\n";
    let p = run(&body, 32).profile;
    assert_eq!(
        (p.global, p.global_write_bytes, p.global_write_sectors),
        (1, 0, 0)
    );
}

#[test]
fn atomics_count_as_a_read_and_a_write() {
    // 32 lanes add to out[0]: 128 bytes each way, one sector each way.
    let body = "    red.global.add.u32 [%rd2], 1;\n";
    let p = run(body, 32).profile;
    assert_eq!(
        (
            p.global,
            p.global_read_bytes,
            p.global_read_sectors,
            p.global_write_bytes,
            p.global_write_sectors
        ),
        (1, 128, 1, 128, 1)
    );
}

/// `st.shared.u32 [smem + 4 * stride * tid]` by one warp.
fn shared_store(stride_words: u32) -> Profile {
    let body = format!(
        "    mul.lo.u32 %r1, %r0, {};\n    mov.u32 %r2, smem;\n    add.u32 %r3, %r2, %r1;\n    st.shared.u32 [%r3], %r0;\n",
        4 * stride_words
    );
    run(&body, 32).profile
}

#[test]
fn shared_store_with_stride_32_words_takes_31_extra_wavefronts() {
    // All 32 words in bank 0.
    let p = shared_store(32);
    assert_eq!(
        (p.shared, p.shared_wavefronts, p.shared_bank_conflicts),
        (1, 32, 31)
    );
    // Stride 1: every lane its own bank.
    let p = shared_store(1);
    assert_eq!((p.shared_wavefronts, p.shared_bank_conflicts), (1, 0));
    // Stride 2: banks 0, 2, .., 30 each hold 2 distinct words.
    let p = shared_store(2);
    assert_eq!((p.shared_wavefronts, p.shared_bank_conflicts), (2, 1));
    // Stride 33: banks 0..31 once each (33 = 1 mod 32).
    let p = shared_store(33);
    assert_eq!((p.shared_wavefronts, p.shared_bank_conflicts), (1, 0));
    // Stride 0 would be a race; stride 8: 4 banks with 8 distinct words each.
    let p = shared_store(8);
    assert_eq!((p.shared_wavefronts, p.shared_bank_conflicts), (8, 7));
}

#[test]
fn shared_broadcast_and_wide_accesses_are_not_conflicts() {
    // Every lane loads smem[0] (after lane 0 stored it): a broadcast, one wavefront.
    let body = "    mov.u32 %r2, smem;\n    setp.eq.u32 %p1, %r0, 0;\n    @%p1 st.shared.u32 [%r2], %r0;\n    bar.sync 0;\n    ld.shared.u32 %r4, [%r2];\n";
    let p = run(body, 32).profile;
    // The store (1 active lane) and the load: one wavefront each.
    assert_eq!(
        (p.shared, p.shared_wavefronts, p.shared_bank_conflicts),
        (2, 2, 0)
    );
    assert_eq!(p.barrier, 1);
    // v2.u32 at 8 * tid: 256 bytes, two half-warp phases of one wavefront.
    let body = "    shl.b32 %r1, %r0, 3;\n    mov.u32 %r2, smem;\n    add.u32 %r3, %r2, %r1;\n    st.shared.v2.u32 [%r3], {%r0, %r0};\n";
    let p = run(body, 32).profile;
    assert_eq!((p.shared_wavefronts, p.shared_bank_conflicts), (2, 0));
    // v4.u32 at 16 * tid: four quarter-warp phases.
    let body = "    shl.b32 %r1, %r0, 4;\n    mov.u32 %r2, smem;\n    add.u32 %r3, %r2, %r1;\n    st.shared.v4.u32 [%r3], {%r0, %r0, %r0, %r0};\n";
    let p = run(body, 32).profile;
    assert_eq!((p.shared_wavefronts, p.shared_bank_conflicts), (4, 0));
    // v4.u32 at 32 * tid: in each 8-lane phase, lanes l and l + 4 share banks with
    // different words: 2 wavefronts per phase.
    let body = "    shl.b32 %r1, %r0, 5;\n    mov.u32 %r2, smem;\n    add.u32 %r3, %r2, %r1;\n    st.shared.v4.u32 [%r3], {%r0, %r0, %r0, %r0};\n";
    let p = run(body, 32).profile;
    assert_eq!((p.shared_wavefronts, p.shared_bank_conflicts), (8, 4));
}

#[test]
fn generic_accesses_count_in_the_space_they_address() {
    // A shared address through cvta: counted as shared, with its bank conflicts; a
    // global one through a generic ld: counted as global.
    let body = "    mov.u64 %rd7, smem;\n    cvta.shared.u64 %rd7, %rd7;\n    shl.b32 %r1, %r0, 7;\n    cvt.u64.u32 %rd8, %r1;\n    add.s64 %rd9, %rd7, %rd8;\n    st.u32 [%rd9], %r0;\n    ld.u32 %r5, [%rd1];\n";
    let p = run(body, 32).profile;
    assert_eq!((p.shared, p.global), (1, 1));
    assert_eq!((p.shared_wavefronts, p.shared_bank_conflicts), (32, 31));
    assert_eq!((p.global_read_bytes, p.global_read_sectors), (128, 1));
}

#[test]
fn ldmatrix_mma_and_cp_async_classes_and_traffic() {
    // Each lane cp.asyncs 16 bytes of inp[16 * tid ..] (512 contiguous bytes: 16 sectors)
    // to smem[16 * tid]; lanes >= 16 copy 0 source bytes (zero-fill, nothing read).
    // ldmatrix.x4 rows at 16 * lane: each 8-row matrix is 128 contiguous bytes, one
    // wavefront; 4 in all. One mma.
    let body = r#"    shl.b32 %r1, %r0, 4;
    mov.u32 %r2, smem;
    add.u32 %r3, %r2, %r1;
    cvt.u64.u32 %rd5, %r1;
    add.s64 %rd3, %rd1, %rd5;
    setp.lt.u32 %p1, %r0, 16;
    selp.u32 %r4, 16, 0, %p1;
    cp.async.cg.shared.global [%r3], [%rd3], 16, %r4;
    cp.async.wait_all;
    bar.sync 0;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r6, %r7, %r8, %r9}, [%r3];
    mov.f32 %f1, 0f00000000;
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r6, %r7, %r8, %r9}, {%r6, %r7}, {%f1, %f1, %f1, %f1};
"#;
    let p = run(body, 32).profile;
    assert_eq!((p.global_read_bytes, p.global_read_sectors), (256, 8));
    assert_eq!((p.global_write_bytes, p.global_write_sectors), (0, 0));
    assert_eq!(
        (p.shared, p.shared_wavefronts, p.shared_bank_conflicts),
        (1, 4, 0)
    );
    assert_eq!((p.mma, p.barrier), (1, 1));
    // cp.async counts as global; its wait as other. alu: mov %r0, shl, mov, add, cvt,
    // add.s64, setp, selp, mov.f32 = 9; other: 2 ld.param, wait_all, ret = 4.
    assert_eq!((p.global, p.alu, p.other), (1, 9, 4));
}

#[test]
fn profiles_add_up_over_ctas_and_launches() {
    // 4 CTAs of the coalesced copy: 4 times one CTA's counts.
    let ptx = kernel(
        &(addresses("mov.u32 %r1, %r0;")
            + "    ld.global.f32 %f1, [%rd3];\n    st.global.f32 [%rd4], %f1;\n"),
    );
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}"));
    let mut dev = Device::new();
    let inp = dev.upload(&vec![0u8; 4096]);
    let out = dev.alloc(4096);
    let one = launch(&mut dev, &module, [1, 1, 1], 1024, inp, out).profile;
    let four = launch(&mut dev, &module, [4, 1, 1], 1024, inp, out).profile;
    assert_eq!(four.global_read_sectors, 4 * one.global_read_sectors);
    assert_eq!(four.alu, 4 * one.alu);
    let mut sum = Profile::default();
    sum.add(&one);
    sum.add(&four);
    assert_eq!(sum.launches, 2);
    assert_eq!(sum.global_read_bytes, 5 * 4096);
    let table = sum.to_string();
    for needle in [
        "2 launches",
        "alu",
        "global memory",
        "20480",
        "bank conflicts",
    ] {
        assert!(table.contains(needle), "{needle}:\n{table}");
    }
}

//! Measures emulator throughput (warp instructions per second) on an arithmetic loop,
//! a global + shared load/store loop and an ldmatrix + mma loop.
use jagged_emu::{Device, KernelArg, LaunchConfig, Module};

const PTX: &str = r#"
.version 8.0
.target sm_80
.address_size 64
.visible .entry alu(.param .u64 out, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, 0;
    cvt.rn.f32.u32 %f1, %r2;
    mov.f32 %f2, 0f00000000;
LOOP:
    fma.rn.f32 %f2, %f1, 0f3F000000, %f2;
    add.s32 %r4, %r3, %r2;
    xor.b32 %r5, %r4, 0x55;
    mul.lo.s32 %r6, %r5, 3;
    add.f32 %f2, %f2, 0f3F800000;
    add.s32 %r3, %r3, 1;
    setp.lt.u32 %p1, %r3, %r1;
    @%p1 bra LOOP;
    mul.wide.u32 %rd2, %r2, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.f32 [%rd3], %f2;
    ret;
}
.visible .entry mem(.param .u64 out, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;
    .shared .align 16 .b8 s[2048];
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    mul.wide.u32 %rd2, %r2, 4;
    add.s64 %rd3, %rd1, %rd2;
    shl.b32 %r4, %r2, 2;
    mov.u32 %r5, s;
    add.u32 %r5, %r5, %r4;
    mov.u32 %r3, 0;
    st.global.f32 [%rd3], 0f00000000;
LOOP:
    ld.global.f32 %f1, [%rd3];
    st.shared.f32 [%r5], %f1;
    ld.shared.f32 %f2, [%r5];
    add.f32 %f2, %f2, 0f3F800000;
    st.global.f32 [%rd3], %f2;
    add.s32 %r3, %r3, 1;
    setp.lt.u32 %p1, %r3, %r1;
    @%p1 bra LOOP;
    ret;
}
.visible .entry tensor(.param .u64 out, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<16>;
    .reg .f32 %f<8>;
    .reg .b64 %rd<4>;
    .shared .align 16 .b8 s[2048];
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    and.b32 %r2, %r2, 31;
    shl.b32 %r4, %r2, 4;
    mov.u32 %r5, s;
    add.u32 %r5, %r5, %r4;
    st.shared.v4.b32 [%r5], {%r2, %r2, %r2, %r2};
    bar.sync 0;
    mov.f32 %f1, 0f00000000;
    mov.f32 %f2, 0f00000000;
    mov.f32 %f3, 0f00000000;
    mov.f32 %f4, 0f00000000;
    mov.u32 %r3, 0;
LOOP:
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r6, %r7, %r8, %r9}, [%r5];
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r6, %r7, %r8, %r9}, {%r6, %r7}, {%f1, %f2, %f3, %f4};
    add.s32 %r3, %r3, 1;
    setp.lt.u32 %p1, %r3, %r1;
    @%p1 bra LOOP;
    ret;
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let module = Module::parse(PTX)?;
    let mut dev = Device::new();
    if let Some(t) = std::env::args().nth(1).and_then(|s| s.parse().ok()) {
        dev.set_host_threads(t);
    }
    let out = dev.alloc(128 * 4);
    let cfg = LaunchConfig {
        grid: [64, 1, 1],
        block: [128, 1, 1],
        dynamic_shared_bytes: 0,
    };
    for kernel in ["alu", "mem", "tensor"] {
        let s = dev.launch(
            &module,
            kernel,
            &cfg,
            &[KernelArg::Ptr(out), KernelArg::U32(200)],
        )?;
        println!(
            "{kernel}: {} warp instructions in {:?}: {:.2} M warp-instr/s",
            s.warp_instructions,
            s.elapsed,
            s.warp_instructions_per_second() / 1e6
        );
    }
    Ok(())
}

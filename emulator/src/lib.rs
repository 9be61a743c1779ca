//! jagged-emu: runs PTX kernels on the CPU with SIMT semantics and a memory checker.
//!
//! ```text
//! PTX text --lexer/parser--> ast --decode--> KernelCode (flat Instr list, register slots)
//!                                                  |
//! Device (global memory) --launch--> CTAs on host threads --> warps, lane by lane
//! ```
//!
//! The checker is always on: every global, shared and local access is bounds- and
//! alignment-checked, shared memory tracks initialization, pending `cp.async` data and
//! races between warps: accesses that no barrier or mbarrier phase orders (one vector
//! clock per warp; a barrier orders the warps that arrived at it before the warps that
//! waited on it, a phase its arrivals before the waits that saw it). A launch with findings returns
//! [`EmuError::MemoryCheck`], except for races that store (nearly) the value already
//! there, which are [`LaunchStats::warnings`] unless [`RunOptions::strict_races`].
//!
//! Every launch also runs a CPU cost model ([`Profile`], in [`LaunchStats::profile`]):
//! warp instructions by class, global bytes and 32-byte sectors per warp-level access, and
//! shared-memory wavefronts and bank conflicts; it costs about 3% of the emulator's time.
//!
//! Modules: `lexer` and `parser` build the `ast`; `decode` lowers it to `ir` (resolved
//! register slots, labels and symbols); `exec` runs CTAs (per-lane PCs, min-PC
//! reconvergence, barriers, collectives, the checker); `wgmma` holds the warpgroup MMA's
//! semantics (descriptor, canonical layouts, fragments; run by `exec::wgmma`);
//! `profile` the cost model's counting;
//! `num` holds lane arithmetic;
//! `memory` the global memory (`AtomicU64` words, sound across host threads);
//! `tma`, `mbarrier` and `tensormap` Hopper's asynchronous copies (decoded in
//! `decode/asyncs.rs`, run in `exec/asyncs.rs`).
//!
//! Supported PTX (`.entry` kernels; `.func` is rejected):
//! - arithmetic: `add sub mul(.lo/.hi/.wide) mad(.lo/.hi/.wide) mul24 mad24 div rem neg abs
//!   min max(.NaN) fma` on integers, f16/bf16 (and `x2`), f32, f64, with `.sat`, `.ftz` and
//!   the rounding modes `rn rz rm rp`; `rcp sqrt rsqrt ex2 lg2 sin cos tanh copysign`
//! - bits: `and or xor not cnot shl shr popc clz brev bfe bfi prmt (all modes) lop3 shf`
//! - `setp` (all comparisons, `.and/.or/.xor`, `p|q`), `set`, `selp`, `mov` (packing and
//!   unpacking `{a, b}`, symbols, special registers), `cvt` (all scalar pairs, integer and
//!   float rounding modes, `.sat`, `.relu`, `f16x2/bf16x2` packing, tf32), `cvta`
//! - memory: `ld/ldu/st` (global, shared, local, param, const, generic; `v2/v4`), `atom/red`
//!   (add min max exch cas and or xor inc dec on 32/64-bit; f32/f64/f16x2/bf16x2 and
//!   f16/bf16 add; b16 cas/exch),
//!   `cp.async` (ca/cg, 4/8/16 bytes, src-size, ignore-src) with `commit_group`,
//!   `wait_group`, `wait_all`; `createpolicy`, cache hints, fences and prefetches accepted
//! - Hopper async copies: `mbarrier` (`init inval arrive(.expect_tx, .noComplete, count)
//!   expect_tx complete_tx test_wait try_wait`, `.parity` or state; a try_wait blocks until
//!   its phase completes, or times out when nothing else can run), `cp.async.bulk`
//!   (global -> shared with
//!   `.mbarrier::complete_tx::bytes`, shared -> global `.bulk_group`, `commit_group`,
//!   `wait_group(.read)`; copies complete when issued), `cp.async.bulk.tensor.{1..5}d`
//!   tile-mode loads and stores through a [`TensorMap`] (by-value `.param .b8 [128]`,
//!   global or shared; swizzle none/32/64/128 B, zero or NaN out-of-bounds fill),
//!   `tensormap.replace` (every tile field), `tensormap.cp_fenceproxy`, `elect.sync`,
//!   `setmaxnreg` (count checked), `fence.proxy.*`, `prefetch.tensormap`. The checker
//!   reports mbarrier misuse ([`CheckKind::MbarrierUninitialized`], `MbarrierArrivals`,
//!   `MbarrierTxCount`, `MbarrierNeverCompletes`), misaligned or out-of-window copy
//!   destinations, and reads of bulk-copied bytes before a wait saw their phase complete
//! - control and warps: `bra` (labels scoped to their `{ }` block, as PTX scopes them: a
//!   label may repeat in sibling blocks, such as Triton's inline `waitLoop:`), `ret exit bar.sync barrier.sync bar.arrive bar.warp.sync
//!   shfl.sync vote.sync redux.sync activemask ldmatrix stmatrix`, `mma.sync` m16n8k16 and
//!   m16n8k8 (f16/bf16 inputs, f32 or f16 accumulators), m16n8k8 and m16n8k4 tf32
//! - warpgroup MMA: `wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}`
//!   (N = 8..256 by 8; A from registers or a descriptor, B from a descriptor; every
//!   swizzle mode, base offset 0; scale-d, imm-scale-a/b, imm-trans-a/b) with
//!   `wgmma.fence`, `commit_group` and `wait_group`. The result is written when
//!   `wait_group` retires the group; the checker reports registers or shared operands
//!   touched while in flight and an mma_async with no `wgmma.fence` after its registers
//!   were accessed ([`CheckKind::WgmmaRegisterInFlight`] and the others)

#![warn(missing_docs)]

mod ast;
mod decode;
mod error;
mod exec;
mod ir;
mod lexer;
mod mbarrier;
mod memory;
mod num;
mod parser;
mod profile;
pub mod tensormap;
mod tma;
mod wgmma;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use error::{Budget, CheckKind, CheckReport, EmuError, Space};
pub use exec::RACE_ULPS;
pub use profile::Profile;
pub use tensormap::{TensorMap, TensorMapError};

use decode::KernelCode;
use memory::{Allocation, GLOBAL_BASE, GLOBAL_END, GlobalMemory, RED_ZONE};

/// Largest dynamic + static shared memory of one CTA (the sm_90 limit, 227 KiB).
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;
/// Default of [`Device::set_cta_instruction_limit`]: far beyond any real CTA (minutes of
/// emulation), so only a kernel that never terminates reaches it.
pub const DEFAULT_CTA_INSTRUCTION_LIMIT: u64 = 1 << 30;
/// Largest number of threads in a CTA.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Largest grid, per dimension (CUDA's limits: x < 2^31, y and z <= 65535).
pub const MAX_GRID_DIMS: [u32; 3] = [(1 << 31) - 1, 65535, 65535];
/// Largest block, per dimension (CUDA's limits; the product is at most
/// [`MAX_THREADS_PER_BLOCK`] too).
pub const MAX_BLOCK_DIMS: [u32; 3] = [1024, 1024, 64];

/// A parsed and pre-decoded PTX module, ready to launch many times.
#[derive(Clone, Debug)]
pub struct Module {
    kernels: Vec<KernelCode>,
    /// Initial contents of the module-scope `.global`/`.const` variables.
    data: Vec<u8>,
}

impl Module {
    /// Parses PTX text. Errors carry the line and column of the offending token;
    /// instructions or syntax the emulator does not implement are
    /// [`EmuError::Unsupported`], never skipped.
    pub fn parse(ptx: &str) -> Result<Module, EmuError> {
        let ast = parser::parse(ptx)?;
        let (kernels, data) = decode::decode_module(&ast)?;
        Ok(Module { kernels, data })
    }

    /// Names of the `.entry` kernels, in source order.
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.kernels.iter().map(|k| k.name.as_str())
    }

    /// Static shared memory of a kernel in bytes (what ptxas would report, without the
    /// dynamic part), or `None` for an unknown kernel.
    pub fn static_shared_bytes(&self, kernel: &str) -> Option<u32> {
        self.kernels
            .iter()
            .find(|k| k.name == kernel)
            .map(|k| k.static_shared)
    }

    fn kernel(&self, name: &str) -> Result<&KernelCode, EmuError> {
        self.kernels.iter().find(|k| k.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.kernel_names().collect();
            EmuError::BadLaunch(format!(
                "no kernel named `{name}` in the module (it has: {})",
                names.join(", ")
            ))
        })
    }
}

/// An address in the emulated device's global memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevicePtr(pub u64);

/// Grid and block shape of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// CTAs in x, y, z (see [`MAX_GRID_DIMS`]; each at least 1).
    pub grid: [u32; 3],
    /// Threads per CTA in x, y, z (see [`MAX_BLOCK_DIMS`]; at most 1024 in all).
    pub block: [u32; 3],
    /// Bytes of dynamic shared memory (`.extern .shared` arrays), after the static part.
    pub dynamic_shared_bytes: u32,
}

impl LaunchConfig {
    /// Checks the grid and block against CUDA's limits ([`EmuError::GridDim`],
    /// [`EmuError::BlockDim`]); returns the number of CTAs and of threads per CTA.
    pub fn validate(&self) -> Result<(u64, u32), EmuError> {
        const AXES: [char; 3] = ['x', 'y', 'z'];
        for (i, (&v, &max)) in self.grid.iter().zip(&MAX_GRID_DIMS).enumerate() {
            if v == 0 || v > max {
                return Err(EmuError::GridDim {
                    grid: self.grid,
                    axis: AXES[i],
                    value: v,
                    max,
                });
            }
        }
        for (i, (&v, &max)) in self.block.iter().zip(&MAX_BLOCK_DIMS).enumerate() {
            if v == 0 || v > max {
                return Err(EmuError::BlockDim {
                    block: self.block,
                    axis: Some(AXES[i]),
                    value: v.into(),
                    max: max.into(),
                });
            }
        }
        let threads: u64 = self.block.iter().map(|&x| u64::from(x)).product();
        let ctas: u64 = self.grid.iter().map(|&x| u64::from(x)).product();
        match u32::try_from(threads) {
            Ok(t) if t <= MAX_THREADS_PER_BLOCK => Ok((ctas, t)),
            _ => Err(EmuError::BlockDim {
                block: self.block,
                axis: None,
                value: threads,
                max: MAX_THREADS_PER_BLOCK.into(),
            }),
        }
    }
}

/// A kernel argument; its size must match the kernel's `.param` declaration (and a float
/// parameter takes a float argument).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    /// A 4-byte integer parameter (`.u32`, `.s32`, `.b32`).
    U32(u32),
    /// A 4-byte integer parameter, signed on the host side.
    I32(i32),
    /// An 8-byte integer parameter (`.u64`, `.s64`, `.b64`).
    U64(u64),
    /// An 8-byte integer parameter, signed on the host side.
    I64(i64),
    /// A `.f32` parameter.
    F32(f32),
    /// A `.f64` parameter.
    F64(f64),
    /// A device pointer (an 8-byte `.u64` parameter).
    Ptr(DevicePtr),
    /// A 1-byte integer parameter (`.u8`, `.s8`, `.b8`; Triton passes a bool as `.u8`).
    U8(u8),
    /// A 1-byte integer parameter, signed on the host side.
    I8(i8),
    /// A 2-byte integer parameter (`.u16`, `.s16`, `.b16`).
    U16(u16),
    /// A 2-byte integer parameter, signed on the host side.
    I16(i16),
    /// A `.f16` parameter.
    F16(half::f16),
    /// A `.bf16` parameter.
    BF16(half::bf16),
    /// A tensor map passed by value (`.param .align 64 .b8 name[128]`).
    TensorMap(TensorMap),
}

impl KernelArg {
    fn bytes(&self) -> Vec<u8> {
        match *self {
            KernelArg::U32(v) => v.to_le_bytes().to_vec(),
            KernelArg::I32(v) => v.to_le_bytes().to_vec(),
            KernelArg::U64(v) => v.to_le_bytes().to_vec(),
            KernelArg::I64(v) => v.to_le_bytes().to_vec(),
            KernelArg::F32(v) => v.to_le_bytes().to_vec(),
            KernelArg::F64(v) => v.to_le_bytes().to_vec(),
            KernelArg::Ptr(p) => p.0.to_le_bytes().to_vec(),
            KernelArg::U8(v) => v.to_le_bytes().to_vec(),
            KernelArg::I8(v) => v.to_le_bytes().to_vec(),
            KernelArg::U16(v) => v.to_le_bytes().to_vec(),
            KernelArg::I16(v) => v.to_le_bytes().to_vec(),
            KernelArg::F16(v) => v.to_le_bytes().to_vec(),
            KernelArg::BF16(v) => v.to_le_bytes().to_vec(),
            KernelArg::TensorMap(m) => m.0.to_vec(),
        }
    }
}

/// What a launch executed and how long it took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchStats {
    /// Warp-level instruction steps (one per instruction per warp, whatever the active lanes).
    pub warp_instructions: u64,
    /// Sum over steps of the lanes whose guard let the instruction execute.
    pub thread_instructions: u64,
    /// Wall-clock time of the launch.
    pub elapsed: Duration,
    /// Checker findings that cannot change results, so the launch succeeded: shared-memory
    /// races where a warp stores the value already there or one at most
    /// [`RACE_ULPS`] ulps from it (Triton's replicated reductions). At most one per kind
    /// and PTX line. [`RunOptions::strict_races`] makes them errors.
    pub warnings: Vec<CheckReport>,
    /// The cost model's counts of the launch (instruction classes, global traffic,
    /// shared bank conflicts).
    pub profile: Profile,
}

/// Default of [`RunOptions::max_warp_instructions`]: 2^36 (minutes of emulation on all
/// cores; far beyond any launch of the test suites).
pub const DEFAULT_LAUNCH_INSTRUCTION_LIMIT: u64 = 1 << 36;
/// Default of [`RunOptions::max_duration`]: 10 minutes.
pub const DEFAULT_LAUNCH_TIME_LIMIT: Duration = Duration::from_secs(600);

/// Options that apply to every launch of a [`Device`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Fail the launch ([`EmuError::MemoryCheck`]) on shared-memory races that store
    /// (nearly) the value already there, instead of returning them as
    /// [`LaunchStats::warnings`].
    pub strict_races: bool,
    /// Most warp instructions of a whole launch (all CTAs) before it stops with
    /// [`EmuError::LaunchBudget`]. Checked every few thousand instructions per host thread,
    /// so a launch may run slightly past it.
    pub max_warp_instructions: u64,
    /// Most wall-clock time of a launch before it stops with [`EmuError::LaunchBudget`];
    /// `None` for no limit.
    pub max_duration: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            strict_races: false,
            max_warp_instructions: DEFAULT_LAUNCH_INSTRUCTION_LIMIT,
            max_duration: Some(DEFAULT_LAUNCH_TIME_LIMIT),
        }
    }
}

impl LaunchStats {
    /// Warp instructions per second of wall-clock time.
    pub fn warp_instructions_per_second(&self) -> f64 {
        self.warp_instructions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The emulated GPU: global memory and kernel launches.
#[derive(Debug)]
pub struct Device {
    mem: GlobalMemory,
    next: u64,
    threads: usize,
    cta_instruction_limit: u64,
    options: RunOptions,
}

impl Default for Device {
    fn default() -> Self {
        Device::new()
    }
}

impl Device {
    /// A device with no allocations that runs CTAs on all available host cores.
    pub fn new() -> Device {
        Device {
            mem: GlobalMemory::default(),
            next: GLOBAL_BASE,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cta_instruction_limit: DEFAULT_CTA_INSTRUCTION_LIMIT,
            options: RunOptions::default(),
        }
    }

    /// Sets the options of the following launches.
    pub fn set_run_options(&mut self, options: RunOptions) {
        self.options = options;
    }

    /// The options launches run with.
    pub fn run_options(&self) -> RunOptions {
        self.options
    }

    /// Sets how many host threads run CTAs (at least 1); 1 gives deterministic ordering
    /// of atomics across CTAs.
    pub fn set_host_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }

    /// Sets the most warp instructions one CTA may execute before a launch fails with
    /// [`EmuError::Runtime`] (a guard against kernels that never terminate).
    pub fn set_cta_instruction_limit(&mut self, limit: u64) {
        self.cta_instruction_limit = limit;
    }

    /// Allocates `bytes` of zero-filled global memory, 256-byte aligned.
    ///
    /// # Panics
    ///
    /// When [`Device::try_alloc`] fails; use that with sizes a user chooses.
    pub fn alloc(&mut self, bytes: usize) -> DevicePtr {
        self.try_alloc(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Allocates `bytes` of zero-filled global memory, 256-byte aligned;
    /// [`EmuError::OutOfMemory`] when the emulated global address space or the host's
    /// memory cannot hold it.
    pub fn try_alloc(&mut self, bytes: usize) -> Result<DevicePtr, EmuError> {
        let base = self.next;
        let oom = |reason: String| EmuError::OutOfMemory {
            bytes: bytes as u64,
            reason,
        };
        let next = (bytes as u64)
            .checked_add(base)
            .and_then(|end| end.checked_add(RED_ZONE))
            .and_then(|end| end.checked_next_multiple_of(256))
            .filter(|&end| end <= GLOBAL_END)
            .ok_or_else(|| {
                oom(format!(
                    "the emulated global address space ends at {GLOBAL_END:#x}"
                ))
            })?;
        let a = Allocation::try_new(bytes as u64).map_err(oom)?;
        self.mem.allocs.insert(base, a);
        self.next = next;
        Ok(DevicePtr(base))
    }

    /// Allocates global memory holding a copy of `bytes`.
    ///
    /// # Panics
    ///
    /// When [`Device::try_upload`] fails.
    pub fn upload(&mut self, bytes: &[u8]) -> DevicePtr {
        self.try_upload(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Allocates global memory holding a copy of `bytes`; [`EmuError::OutOfMemory`] as
    /// [`Device::try_alloc`].
    pub fn try_upload(&mut self, bytes: &[u8]) -> Result<DevicePtr, EmuError> {
        let p = self.try_alloc(bytes.len())?;
        if let Some((_, a)) = self.mem.find(p.0, bytes.len() as u64) {
            a.write(0, bytes);
        }
        Ok(p)
    }

    /// Copies `bytes` to device memory at `ptr` (which may point inside an allocation).
    pub fn write(&mut self, ptr: DevicePtr, bytes: &[u8]) -> Result<(), EmuError> {
        let (base, a) = self.range(ptr, bytes.len())?;
        a.write(ptr.0 - base, bytes);
        Ok(())
    }

    /// Copies `len` bytes of device memory at `ptr` to the host.
    pub fn read(&self, ptr: DevicePtr, len: usize) -> Result<Vec<u8>, EmuError> {
        let (base, a) = self.range(ptr, len)?;
        let mut out = vec![0u8; len];
        a.read(ptr.0 - base, &mut out);
        Ok(out)
    }

    /// Frees an allocation; `ptr` must be the address `alloc` returned.
    pub fn free(&mut self, ptr: DevicePtr) -> Result<(), EmuError> {
        match self.mem.allocs.remove(&ptr.0) {
            Some(_) => Ok(()),
            None => Err(EmuError::BadAccess(format!(
                "free of {:#x}, which is not the start of an allocation",
                ptr.0
            ))),
        }
    }

    fn range(&self, ptr: DevicePtr, len: usize) -> Result<(u64, &Allocation), EmuError> {
        self.mem.find(ptr.0, len as u64).ok_or_else(|| {
            EmuError::BadAccess(format!(
                "{len} bytes at {:#x} are not inside one allocation ({})",
                ptr.0,
                self.mem.describe(ptr.0)
            ))
        })
    }

    /// Runs `kernel` of `module` over the grid. Returns [`EmuError::MemoryCheck`] when the
    /// checker found errors (the kernel still ran to completion).
    pub fn launch(
        &mut self,
        module: &Module,
        kernel: &str,
        config: &LaunchConfig,
        args: &[KernelArg],
    ) -> Result<LaunchStats, EmuError> {
        let start = Instant::now();
        let k = module.kernel(kernel)?;
        let params = pack_params(k, args)?;
        let (nctas, nthreads) = config.validate()?;
        let nthreads = u64::from(nthreads);
        if let Some(r) = k.reqntid
            && r != config.block
        {
            return Err(EmuError::BadLaunch(format!(
                "kernel `{kernel}` requires block {r:?} (.reqntid), got {:?}",
                config.block
            )));
        }
        if let Some(m) = k.maxntid
            && nthreads > m.iter().map(|&x| x as u64).product::<u64>()
        {
            return Err(EmuError::BadLaunch(format!(
                "kernel `{kernel}` allows at most {m:?} threads (.maxntid), got {:?}",
                config.block
            )));
        }
        let shared = k.dynamic_offset as u64 + config.dynamic_shared_bytes as u64;
        let shared = shared.max(k.static_shared as u64);
        if shared > MAX_SHARED_BYTES as u64 {
            return Err(EmuError::BadLaunch(format!(
                "kernel `{kernel}` needs {shared} bytes of shared memory ({} static + {} dynamic); the limit is {MAX_SHARED_BYTES}",
                k.static_shared, config.dynamic_shared_bytes
            )));
        }
        let mut stats = LaunchStats::default();
        let abort = AtomicBool::new(false);
        let spent = AtomicU64::new(0);
        let threads = self.threads.min(nctas as usize);
        let ctx = exec::LaunchCtx {
            kernel: k,
            global: &self.mem,
            params: &params,
            module_data: &module.data,
            grid: config.grid,
            block: config.block,
            shared_bytes: shared as u32,
            dynamic_shared: config.dynamic_shared_bytes,
            abort: &abort,
            cta_instruction_limit: self.cta_instruction_limit,
            exclusive: threads <= 1,
            strict_races: self.options.strict_races,
            spent: &spent,
            max_warp_instructions: self.options.max_warp_instructions,
            start,
            deadline: self.options.max_duration.and_then(|d| start.checked_add(d)),
        };
        let next = AtomicUsize::new(0);
        let run = || -> (exec::Worker, Option<(u64, EmuError)>) {
            let mut w = exec::Worker::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                if i >= nctas || abort.load(Ordering::Relaxed) {
                    return (w, None);
                }
                let g = config.grid;
                let cta = [
                    (i % g[0] as u64) as u32,
                    ((i / g[0] as u64) % g[1] as u64) as u32,
                    (i / (g[0] as u64 * g[1] as u64)) as u32,
                ];
                if let Err(e) = w.run_cta(&ctx, cta) {
                    abort.store(true, Ordering::Relaxed);
                    return (w, Some((i, e)));
                }
            }
        };
        let results: Vec<(exec::Worker, Option<(u64, EmuError)>)> = if threads <= 1 {
            vec![run()]
        } else {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| s.spawn(run)).collect();
                hs.into_iter()
                    .map(|h| match h.join() {
                        Ok(r) => r,
                        Err(p) => std::panic::resume_unwind(p),
                    })
                    .collect()
            })
        };
        let mut reports = Vec::new();
        let mut warnings = Vec::new();
        let mut first_err: Option<(u64, EmuError)> = None;
        for (w, e) in results {
            stats.warp_instructions += w.warp_instructions;
            stats.thread_instructions += w.thread_instructions;
            stats.profile.add(&w.profile);
            stats.profile.add_classes(&w.class_counts);
            reports.extend(w.reports);
            warnings.extend(w.warnings);
            if let Some((i, e)) = e
                && first_err.as_ref().is_none_or(|(j, _)| i < *j)
            {
                first_err = Some((i, e));
            }
        }
        if let Some((_, e)) = first_err {
            return Err(e);
        }
        stats.elapsed = start.elapsed();
        if !reports.is_empty() {
            return Err(EmuError::MemoryCheck(first_reports(reports)));
        }
        stats.warnings = first_reports(warnings);
        stats.profile.launches = 1;
        Ok(stats)
    }
}

/// The reports of several workers, one per kind and line (the first CTA's), by line.
fn first_reports(mut reports: Vec<CheckReport>) -> Vec<CheckReport> {
    reports.sort_by_key(|r| (r.line, r.cta[2], r.cta[1], r.cta[0]));
    let mut seen = std::collections::HashSet::new();
    reports.retain(|r| seen.insert((r.kind, r.line)));
    reports.truncate(exec::MAX_REPORTS);
    reports
}

fn pack_params(k: &KernelCode, args: &[KernelArg]) -> Result<Vec<u8>, EmuError> {
    if args.len() != k.params.len() {
        return Err(EmuError::BadLaunch(format!(
            "kernel `{}` takes {} arguments, {} given",
            k.name,
            k.params.len(),
            args.len()
        )));
    }
    let mut buf = vec![0u8; k.param_bytes as usize];
    for (i, (p, a)) in k.params.iter().zip(args).enumerate() {
        let b = a.bytes();
        let float_arg = matches!(
            a,
            KernelArg::F32(_) | KernelArg::F64(_) | KernelArg::F16(_) | KernelArg::BF16(_)
        );
        if b.len() != p.size as usize || (p.float && !float_arg) {
            return Err(EmuError::BadLaunch(format!(
                "argument {i} of kernel `{}` is {a:?} ({} bytes), but parameter `{}` (PTX line {}) is {} bytes{}",
                k.name,
                b.len(),
                p.name,
                p.line,
                p.size,
                if p.float { " of float type" } else { "" }
            )));
        }
        buf[p.offset as usize..(p.offset + p.size) as usize].copy_from_slice(&b);
    }
    Ok(buf)
}

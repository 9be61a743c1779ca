//! Errors of parsing and running PTX, and memory-checker reports.

use std::fmt;

/// Everything that can go wrong in the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    /// The PTX text is malformed.
    #[error("PTX parse error at {line}:{column}: {message}")]
    Parse {
        /// 1-based line of the PTX text.
        line: u32,
        /// 1-based column.
        column: u32,
        /// What is wrong.
        message: String,
    },
    /// The PTX is well-formed but uses something the emulator does not implement.
    #[error("unsupported PTX at {line}:{column}: {what}")]
    Unsupported {
        /// 1-based line of the PTX text.
        line: u32,
        /// 1-based column.
        column: u32,
        /// The instruction, modifier or directive that is not implemented.
        what: String,
    },
    /// The launch request does not fit the kernel (unknown kernel, bad arguments, bad sizes).
    #[error("bad launch: {0}")]
    BadLaunch(String),
    /// A grid dimension outside CUDA's limits: x in 1 to 2^31 - 1, y and z in 1 to 65535.
    #[error("bad launch: grid {grid:?}: {axis} is {value}, it must be 1 to {max}")]
    GridDim {
        /// The grid as given.
        grid: [u32; 3],
        /// The dimension at fault: `x`, `y` or `z`.
        axis: char,
        /// Its value.
        value: u32,
        /// Its largest valid value.
        max: u32,
    },
    /// A block dimension outside CUDA's limits (x and y at most 1024, z at most 64, each
    /// at least 1), or a block of more than 1024 threads.
    #[error("bad launch: block {block:?}: {} is {value}, it must be 1 to {max}", axis.map_or("the thread count".to_string(), |a| a.to_string()))]
    BlockDim {
        /// The block as given.
        block: [u32; 3],
        /// The dimension at fault, or `None` for the product of the three.
        axis: Option<char>,
        /// Its value.
        value: u64,
        /// Its largest valid value.
        max: u64,
    },
    /// A device allocation that does not fit the emulated address space or host memory.
    #[error("cannot allocate {bytes} bytes of device memory: {reason}")]
    OutOfMemory {
        /// The size requested.
        bytes: u64,
        /// Why it cannot be had.
        reason: String,
    },
    /// A host-side memory operation named memory that is not allocated.
    #[error("bad device memory access: {0}")]
    BadAccess(String),
    /// The memory checker found errors; the launch ran to completion (bad loads read 0,
    /// bad stores were dropped).
    #[error("memory check failed with {} report(s):\n{}", .0.len(), ReportList(.0))]
    MemoryCheck(Vec<CheckReport>),
    /// The launch ran past its budget (`RunOptions::max_warp_instructions` or
    /// `RunOptions::max_duration`) and was stopped; global memory holds what the CTAs
    /// that ran wrote.
    #[error(
        "kernel `{kernel}` stopped: the launch exceeded its budget of {budget} ({warp_instructions} warp instructions in {:.3} s); raise the limit in RunOptions (jagc emu: --max-instructions, --max-seconds) if the kernel is meant to run this long",
        elapsed.as_secs_f64()
    )]
    LaunchBudget {
        /// The kernel's name.
        kernel: String,
        /// The budget that ran out.
        budget: Budget,
        /// Warp instructions executed when the launch stopped.
        warp_instructions: u64,
        /// Wall-clock time when the launch stopped.
        elapsed: std::time::Duration,
    },
    /// The kernel did something with no defined outcome that is not a memory error
    /// (a collective with a partial warp, a deadlock at a barrier, a runaway loop).
    #[error(
        "kernel `{kernel}` failed at PTX line {line}, CTA {cta:?}, thread {thread:?}: {message}"
    )]
    Runtime {
        /// The kernel's name.
        kernel: String,
        /// 1-based PTX line of the instruction.
        line: u32,
        /// CTA index (x, y, z).
        cta: [u32; 3],
        /// Thread index in the CTA (x, y, z).
        thread: [u32; 3],
        /// What went wrong.
        message: String,
    },
}

/// A whole-launch budget of the emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// At most this many warp instructions in the launch.
    WarpInstructions(u64),
    /// At most this much wall-clock time.
    Time(std::time::Duration),
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::WarpInstructions(n) => write!(f, "{n} warp instructions"),
            Budget::Time(t) => write!(f, "{:.3} s of wall-clock time", t.as_secs_f64()),
        }
    }
}

struct ReportList<'a>(&'a [CheckReport]);

impl fmt::Display for ReportList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in self.0 {
            writeln!(f, "  {r}")?;
        }
        Ok(())
    }
}

/// The kind of memory error a [`CheckReport`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// The access touches bytes outside every allocation (global) or outside the CTA's
    /// shared memory / the thread's local memory.
    OutOfBounds,
    /// The address is not a multiple of the access size.
    Misaligned,
    /// A shared-memory read of bytes that no thread of the CTA wrote (and no cp.async delivered).
    UninitializedSharedRead,
    /// A shared-memory read of bytes that a cp.async has not delivered yet (no wait_group
    /// yet), or that a bulk/tensor copy wrote before a wait on its mbarrier saw the phase
    /// complete.
    PendingAsyncCopyRead,
    /// Two warps of a CTA touched the same shared bytes between barriers, at least one
    /// wrote, and not both atomically.
    SharedRace,
    /// An instruction other than `wgmma.mma_async` read or wrote an accumulator (or A
    /// fragment) register of a `wgmma.mma_async` whose group no `wgmma.wait_group` has
    /// retired yet.
    WgmmaRegisterInFlight,
    /// A shared-memory write to bytes that a `wgmma.mma_async` still in flight (not yet
    /// retired by `wgmma.wait_group`) reads through a matrix descriptor.
    WgmmaOperandOverwrite,
    /// A `wgmma.mma_async` whose accumulator or A registers were accessed by another
    /// instruction since the warp's last `wgmma.fence` (or with no fence yet).
    WgmmaMissingFence,
    /// An mbarrier operation on an object that was never initialized (or was invalidated).
    MbarrierUninitialized,
    /// More arrivals on an mbarrier phase than it has pending.
    MbarrierArrivals,
    /// An mbarrier's transaction count left its range or went below zero with every
    /// arrival in (more bytes completed than expected).
    MbarrierTxCount,
    /// A `try_wait` on an mbarrier phase that can never complete (nothing left to arrive).
    MbarrierNeverCompletes,
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckKind::OutOfBounds => "out-of-bounds access",
            CheckKind::Misaligned => "misaligned access",
            CheckKind::UninitializedSharedRead => "read of uninitialized shared memory",
            CheckKind::PendingAsyncCopyRead => {
                "read of shared memory with a cp.async or bulk copy still pending"
            }
            CheckKind::SharedRace => "shared-memory data race",
            CheckKind::WgmmaRegisterInFlight => {
                "access to a register of a wgmma.mma_async still in flight"
            }
            CheckKind::WgmmaOperandOverwrite => {
                "write to shared memory a wgmma.mma_async in flight reads"
            }
            CheckKind::WgmmaMissingFence => "wgmma.mma_async without a wgmma.fence",
            CheckKind::MbarrierUninitialized => "use of an uninitialized mbarrier",
            CheckKind::MbarrierArrivals => "more mbarrier arrivals than expected",
            CheckKind::MbarrierTxCount => "mbarrier transaction count underflow",
            CheckKind::MbarrierNeverCompletes => "wait on an mbarrier phase that never completes",
        })
    }
}

/// The memory space of a checked access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// Device memory (allocations and module-scope variables).
    Global,
    /// The CTA's shared memory; addresses are offsets in it.
    Shared,
    /// A thread's local memory; addresses are offsets in it.
    Local,
    /// Kernel parameters.
    Param,
    /// A thread's registers; the address is the register's slot.
    Register,
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Local => "local",
            Space::Param => "param",
            Space::Register => "register",
        })
    }
}

/// One memory error found by the checker: what, where in the PTX, which thread, which bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// What kind of error.
    pub kind: CheckKind,
    /// The kernel's name.
    pub kernel: String,
    /// 1-based line of the offending instruction in the PTX text.
    pub line: u32,
    /// CTA index (x, y, z).
    pub cta: [u32; 3],
    /// Thread index in the CTA (x, y, z).
    pub thread: [u32; 3],
    /// The state space of the access.
    pub space: Space,
    /// The address in its state space (a global virtual address, or a shared offset).
    pub address: u64,
    /// Size of the access in bytes.
    pub size: u32,
    /// True for a write (store, atomic, cp.async delivery).
    pub write: bool,
    /// Extra context, e.g. the other warp of a race or the nearest allocation.
    pub detail: String,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in kernel `{}` at PTX line {}: CTA ({}, {}, {}) thread ({}, {}, {}) {} {} bytes at {} address {:#x}",
            self.kind,
            self.kernel,
            self.line,
            self.cta[0],
            self.cta[1],
            self.cta[2],
            self.thread[0],
            self.thread[1],
            self.thread[2],
            if self.write { "writes" } else { "reads" },
            self.size,
            self.space,
            self.address
        )?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

//! Pre-decoded instructions: what the interpreter executes.
//!
//! Registers are resolved to slot indices of a flat per-thread register file (one `u64`
//! per register, whatever its declared width), labels to instruction indices and
//! symbols to addresses in their state space.

use std::fmt;

/// A PTX fundamental type as used by an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    B128,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    Bf16,
    F32,
    F64,
    F16x2,
    Bf16x2,
    Tf32,
    Pred,
}

impl Ty {
    /// Parses a type modifier without its dot (`"u32"`).
    pub fn from_name(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "b128" => Ty::B128,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "bf16" => Ty::Bf16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "f16x2" => Ty::F16x2,
            "bf16x2" => Ty::Bf16x2,
            "tf32" => Ty::Tf32,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    /// Size in bytes (a predicate counts as 1).
    pub fn size(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 | Ty::Pred => 1,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 2,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 | Ty::Tf32 => 4,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 8,
            Ty::B128 => 16,
        }
    }

    /// Width in bits.
    pub fn bits(self) -> u32 {
        self.size() * 8
    }

    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    /// Scalar floating-point types (packed `x2` types are not scalar floats).
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::Bf16 | Ty::F32 | Ty::F64 | Ty::Tf32)
    }

    /// Mask of the low `bits()` bits.
    pub fn mask(self) -> u64 {
        if self.size() >= 8 {
            u64::MAX
        } else {
            (1u64 << self.bits()) - 1
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format!("{self:?}").to_ascii_lowercase())
    }
}

/// A special (read-only, per-thread) register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sreg {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    Clock,
    Clock64,
    LanemaskEq,
    LanemaskLt,
    LanemaskLe,
    LanemaskGt,
    LanemaskGe,
    SmId,
    DynamicSmemSize,
    TotalSmemSize,
}

/// A source operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Src {
    Reg(u32),
    Imm(u64),
    Sreg(Sreg),
}

/// State space of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemSpace {
    Global,
    Shared,
    Local,
    Param,
    /// Generic addressing: the address says which window it is in.
    Generic,
}

/// A memory address: `base register + offset`, or an absolute `offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Addr {
    pub base: Option<u32>,
    pub offset: i64,
}

/// Rounding modes of float results and float-to-integer conversions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rnd {
    /// No rounding modifier given.
    Default,
    Rn,
    Rz,
    Rm,
    Rp,
    Rna,
    /// Round to integral, nearest even (`.rni`), toward zero (`.rzi`), down, up.
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

/// Single-instruction arithmetic and logic, computed lane by lane from up to four sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    Add,
    Sub,
    MulLo,
    MulHi,
    MulWide,
    Mul24Lo,
    Mul24Hi,
    MadLo,
    MadHi,
    MadWide,
    Mad24Lo,
    Div,
    Rem,
    Neg,
    Abs,
    Min,
    Max,
    And,
    Or,
    Xor,
    Not,
    Cnot,
    Shl,
    Shr,
    Popc,
    Clz,
    Brev,
    Bfe,
    Bfi,
    Prmt(PrmtMode),
    Lop3,
    Fma,
    Rcp,
    Sqrt,
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
    Copysign,
    /// Funnel shift `shf.l`/`shf.r` of the 64-bit pair `{b, a}` (`.wrap` or `.clamp`).
    Shf {
        left: bool,
        clamp: bool,
    },
    /// `mov`: a plain copy (width-masked).
    Mov,
}

impl AluOp {
    /// Number of source operands the operation reads.
    pub fn arity(self) -> usize {
        match self {
            AluOp::Neg
            | AluOp::Abs
            | AluOp::Not
            | AluOp::Cnot
            | AluOp::Popc
            | AluOp::Clz
            | AluOp::Brev
            | AluOp::Rcp
            | AluOp::Sqrt
            | AluOp::Rsqrt
            | AluOp::Ex2
            | AluOp::Lg2
            | AluOp::Sin
            | AluOp::Cos
            | AluOp::Tanh
            | AluOp::Mov => 1,
            AluOp::MadLo
            | AluOp::MadHi
            | AluOp::MadWide
            | AluOp::Mad24Lo
            | AluOp::Fma
            | AluOp::Bfe
            | AluOp::Prmt(_)
            | AluOp::Shf { .. } => 3,
            AluOp::Bfi | AluOp::Lop3 => 4,
            _ => 2,
        }
    }
}

/// `prmt` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrmtMode {
    Default,
    F4e,
    B4e,
    Rc8,
    Ecl,
    Ecr,
    Rc16,
}

/// Flags of a float (or saturating integer) ALU instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AluFlags {
    pub rnd: Rnd,
    pub ftz: bool,
    pub sat: bool,
    /// `.NaN` on min/max: NaN propagates.
    pub nan: bool,
    /// `.approx` (or `.full`) variants of div, sqrt, rcp.
    pub approx: bool,
}

/// `setp` comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// Boolean combination of a setp result with a third predicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

/// Atomic operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Exch,
    Cas,
    And,
    Or,
    Xor,
    Inc,
    Dec,
}

/// `shfl.sync` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

/// `vote.sync` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

/// `mma.sync` shapes and types that are implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmaKind {
    /// m16n8k16, A/B f16 or bf16 (`ab`), C/D f32 or f16 (`cd`).
    M16n8k16 { ab: Ty, cd: Ty },
    /// m16n8k8 with f16/bf16 inputs.
    M16n8k8 { ab: Ty, cd: Ty },
    /// m16n8k8 with tf32 inputs and f32 accumulators.
    M16n8k8Tf32,
    /// m16n8k4 with tf32 inputs and f32 accumulators.
    M16n8k4Tf32,
}

/// One decoded instruction.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `d = op(s[0], s[1], s[2], s[3])` lane by lane.
    Alu {
        op: AluOp,
        ty: Ty,
        flags: AluFlags,
        d: u32,
        s: [Src; 4],
    },
    /// `p = a cmp b` (combined with `c`); `q` gets the complement.
    Setp {
        cmp: Cmp,
        /// `.ftz`: f32 subnormal operands compare as zero.
        ftz: bool,
        ty: Ty,
        p: Option<u32>,
        q: Option<u32>,
        a: Src,
        b: Src,
        comb: Option<(BoolOp, Src, bool)>,
    },
    /// `set.cmp.dty.sty`: d = all-ones (int) or 1.0 (f32) when the comparison holds.
    Set {
        cmp: Cmp,
        /// `.ftz`: f32 subnormal operands compare as zero.
        ftz: bool,
        dty: Ty,
        sty: Ty,
        d: u32,
        a: Src,
        b: Src,
    },
    /// `d = c ? a : b`.
    Selp {
        ty: Ty,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `mov.bN d, {a, b, ...}`: concatenate parts, first part in the low bits.
    Pack {
        d: u32,
        parts: Vec<Src>,
        part_bits: u32,
    },
    /// `mov.bN {a, b, ...}, s`: split s into parts, first part from the low bits.
    Unpack {
        ds: Vec<Option<u32>>,
        a: Src,
        part_bits: u32,
    },
    /// `cvt` between scalar types.
    Cvt {
        dty: Ty,
        sty: Ty,
        rnd: Rnd,
        sat: bool,
        ftz: bool,
        relu: bool,
        d: u32,
        a: Src,
    },
    /// `cvt.rn{.relu}.{f16x2,bf16x2}.f32 d, a, b`: a goes to the upper half.
    CvtPack {
        dty: Ty,
        relu: bool,
        d: u32,
        a: Src,
        b: Src,
    },
    /// `cvta{.to}.space`: generic <-> space address.
    Cvta {
        to: bool,
        space: MemSpace,
        d: u32,
        a: Src,
    },
    /// Load `n` consecutive elements of `ty` (vector loads have n = 2 or 4).
    Ld {
        space: MemSpace,
        ty: Ty,
        ds: Vec<Option<u32>>,
        addr: Addr,
        /// Width of the destination registers in bits (narrow loads sign/zero-extend to it).
        reg_bits: u32,
    },
    /// Store `srcs` as consecutive elements of `ty`.
    St {
        space: MemSpace,
        ty: Ty,
        srcs: Vec<Src>,
        addr: Addr,
    },
    /// `atom` (with destinations) or `red` (without); `.v2`/`.v4`/`.v8`
    /// vector atomics (sm_90: f32 / f16 adds) apply one atomic per element
    /// of consecutive elements, element `k` from `b[k]` into `d[k]`.
    Atom {
        space: MemSpace,
        op: AtomOp,
        ty: Ty,
        d: Vec<u32>,
        addr: Addr,
        b: Vec<Src>,
        c: Src,
    },
    /// `activemask.b32 d`: the lanes executing this instruction together.
    ActiveMask {
        d: u32,
    },
    Bra {
        target: u32,
    },
    /// `ret` or `exit`.
    Exit,
    /// `bar.sync`/`barrier.sync`/`bar.arrive` with barrier id and optional thread count.
    Bar {
        id: Src,
        count: Option<Src>,
        arrive: bool,
    },
    /// `bar.warp.sync membermask`.
    WarpSync {
        mask: Src,
    },
    /// Instructions with no effect in the emulator (fences, prefetches).
    Nop,
    Shfl {
        mode: ShflMode,
        d: u32,
        p: Option<u32>,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    Vote {
        mode: VoteMode,
        d: u32,
        a: Src,
        negate: bool,
        mask: Src,
    },
    /// `redux.sync.op.type d, a, membermask`.
    Redux {
        op: AtomOp,
        ty: Ty,
        d: u32,
        a: Src,
        mask: Src,
    },
    /// `ldmatrix.sync.aligned.m8n8.xN{.trans}.shared.b16`.
    Ldmatrix {
        ds: Vec<u32>,
        trans: bool,
        addr: Addr,
        space: MemSpace,
    },
    /// `stmatrix.sync.aligned.m8n8.xN{.trans}.shared.b16`.
    Stmatrix {
        srcs: Vec<Src>,
        trans: bool,
        addr: Addr,
        space: MemSpace,
    },
    Mma {
        kind: MmaKind,
        d: Vec<u32>,
        a: Vec<Src>,
        b: Vec<Src>,
        c: Vec<Src>,
    },
    /// `cp.async` of `size` bytes; `src_size` bytes are read, the rest zero-filled.
    CpAsync {
        dst: Addr,
        src: Addr,
        size: u32,
        src_size: Option<Src>,
        ignore_src: Option<(Src, bool)>,
    },
    CpAsyncCommit,
    /// Wait until at most `n` committed groups are pending (`wait_all` is 0, and commits first).
    CpAsyncWait {
        n: u32,
        all: bool,
    },
    /// `wgmma.mma_async`, `fence`, `commit_group`, `wait_group` (see [`crate::wgmma`]).
    Wgmma(crate::wgmma::WgOp),
    /// Hopper's asynchronous copies, mbarriers, tensor maps and `elect.sync`.
    Async(Box<crate::tma::AsyncOp>),
}

/// An instruction with its guard predicate and source position.
#[derive(Clone, Debug, PartialEq)]
pub struct Instr {
    pub op: Op,
    /// Guard predicate register and whether it is negated (`@!p`).
    pub guard: Option<(u32, bool)>,
    pub line: u32,
    pub col: u32,
    /// The cost model's class of the instruction ([`crate::profile::Class::of`]).
    pub class: crate::profile::Class,
}

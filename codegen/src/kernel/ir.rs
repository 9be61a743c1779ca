//! The kernel IR proper: register classes and registers, PTX types and
//! operands, instructions and statements, [`Kernel`] and [`KernelModule`].

use std::fmt;

/// Register classes: each virtual register belongs to one; they become the
/// PTX `.reg` declarations (`%p`, `%h`, `%r`, `%rd`, `%f`, `%fd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegClass {
    /// 1-bit predicate.
    Pred,
    /// 16-bit untyped (holds f16 / bf16 / u16 bits).
    B16,
    /// 32-bit integer.
    B32,
    /// 64-bit integer (addresses, 64-bit indices).
    B64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
}

impl RegClass {
    /// Every class, in declaration order.
    pub const ALL: [RegClass; 6] = [
        RegClass::Pred,
        RegClass::B16,
        RegClass::B32,
        RegClass::B64,
        RegClass::F32,
        RegClass::F64,
    ];

    /// The PTX register-name prefix of this class.
    pub fn prefix(self) -> &'static str {
        match self {
            RegClass::Pred => "%p",
            RegClass::B16 => "%h",
            RegClass::B32 => "%r",
            RegClass::B64 => "%rd",
            RegClass::F32 => "%f",
            RegClass::F64 => "%fd",
        }
    }

    /// The PTX type used to declare registers of this class.
    pub fn decl_type(self) -> Type {
        match self {
            RegClass::Pred => Type::Pred,
            RegClass::B16 => Type::B16,
            RegClass::B32 => Type::B32,
            RegClass::B64 => Type::B64,
            RegClass::F32 => Type::F32,
            RegClass::F64 => Type::F64,
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// A virtual register: a typed handle, numbered per class within a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reg {
    /// Which register file it lives in.
    pub class: RegClass,
    /// Its number within that class.
    pub index: u32,
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.class.prefix(), self.index)
    }
}

/// PTX instruction / storage types (the `.u32`, `.f16`, ... suffixes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// Predicate.
    Pred,
    /// Untyped bits.
    B8,
    /// Untyped bits.
    B16,
    /// Untyped bits.
    B32,
    /// Untyped bits.
    B64,
    /// Unsigned integers.
    U8,
    /// Unsigned integers.
    U16,
    /// Unsigned integers.
    U32,
    /// Unsigned integers.
    U64,
    /// Signed integers.
    S8,
    /// Signed integers.
    S16,
    /// Signed integers.
    S32,
    /// Signed integers.
    S64,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// IEEE single.
    F32,
    /// TensorFloat-32: an f32 with 10 mantissa bits (`cvt.rna.tf32.f32`
    /// makes one; `mma` takes them, one per 32-bit register).
    Tf32,
    /// IEEE double.
    F64,
}

impl Type {
    /// Size in bytes (a predicate counts as 1).
    pub fn size(self) -> u32 {
        match self {
            Type::Pred | Type::B8 | Type::U8 | Type::S8 => 1,
            Type::B16 | Type::U16 | Type::S16 | Type::F16 | Type::Bf16 => 2,
            Type::B32 | Type::U32 | Type::S32 | Type::F32 | Type::Tf32 => 4,
            Type::B64 | Type::U64 | Type::S64 | Type::F64 => 8,
        }
    }

    /// The register class a value of this type is held in.
    pub fn reg_class(self) -> RegClass {
        match self {
            Type::Pred => RegClass::Pred,
            Type::B8 | Type::U8 | Type::S8 | Type::B32 | Type::U32 | Type::S32 | Type::Tf32 => {
                RegClass::B32
            }
            Type::B16 | Type::U16 | Type::S16 | Type::F16 | Type::Bf16 => RegClass::B16,
            Type::B64 | Type::U64 | Type::S64 => RegClass::B64,
            Type::F32 => RegClass::F32,
            Type::F64 => RegClass::F64,
        }
    }

    /// The untyped-bits type of the same size (`and`, `or`, `shl`... want it).
    pub fn bits(self) -> Type {
        if self == Type::Pred {
            // Logic on predicates keeps `.pred` (`and.pred`).
            return Type::Pred;
        }
        match self.size() {
            1 => Type::B8,
            2 => Type::B16,
            4 => Type::B32,
            _ => Type::B64,
        }
    }

    /// True for f16, bf16, f32, f64.
    pub fn is_float(self) -> bool {
        matches!(self, Type::F16 | Type::Bf16 | Type::F32 | Type::F64)
    }

    /// True for the signed integer types.
    pub fn is_signed(self) -> bool {
        matches!(self, Type::S8 | Type::S16 | Type::S32 | Type::S64)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Type::Pred => "pred",
            Type::B8 => "b8",
            Type::B16 => "b16",
            Type::B32 => "b32",
            Type::B64 => "b64",
            Type::U8 => "u8",
            Type::U16 => "u16",
            Type::U32 => "u32",
            Type::U64 => "u64",
            Type::S8 => "s8",
            Type::S16 => "s16",
            Type::S32 => "s32",
            Type::S64 => "s64",
            Type::F16 => "f16",
            Type::Bf16 => "bf16",
            Type::F32 => "f32",
            Type::Tf32 => "tf32",
            Type::F64 => "f64",
        };
        f.write_str(s)
    }
}

/// An instruction source: a register or an immediate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    /// A virtual register.
    Reg(Reg),
    /// An integer immediate (printed in decimal).
    Int(i64),
    /// An f32 immediate (printed as its exact bit pattern, `0fXXXXXXXX`).
    F32(f32),
}

impl From<Reg> for Operand {
    fn from(r: Reg) -> Self {
        Operand::Reg(r)
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Reg(r) => write!(f, "{r}"),
            Operand::Int(v) => write!(f, "{v}"),
            Operand::F32(v) => write!(f, "0f{:08X}", v.to_bits()),
        }
    }
}

/// Handle of a kernel parameter (index into [`Kernel::params`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub u32);

/// Handle of a static shared array (index into [`Kernel::shared`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SharedId(pub u32);

/// Handle of a branch target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Label(pub u32);

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "$L{}", self.0)
    }
}

/// The type of a kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// A 32-bit unsigned scalar.
    U32,
    /// A 64-bit unsigned scalar.
    U64,
    /// A 32-bit float scalar.
    F32,
    /// A pointer to global memory whose address is a multiple of `align` bytes.
    Ptr {
        /// Guaranteed alignment of the address, in bytes.
        align: u32,
    },
    /// A TMA tensor map passed by value (`.param .align 64 .b8 name[128]`,
    /// CUDA's `CUtensorMap`): the `cp.async.bulk.tensor` copies read it
    /// through its generic address ([`Inst::ParamAddr`]).
    TensorMap,
}

/// One kernel parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Its PTX name (unique within the kernel).
    pub name: String,
    /// Its type.
    pub ty: ParamType,
}

/// A static shared-memory array.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedArray {
    /// Element type.
    pub elem: Type,
    /// Number of elements.
    pub len: u32,
    /// Alignment in bytes.
    pub align: u32,
}

impl SharedArray {
    /// Size in bytes.
    pub fn bytes(&self) -> u32 {
        self.elem.size() * self.len
    }
}

/// Memory state spaces an instruction can address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// Device memory.
    Global,
    /// CTA-shared memory (addressed by 32-bit registers).
    Shared,
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Space::Global => "global",
            Space::Shared => "shared",
        })
    }
}

/// A memory address: a register plus a constant byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    /// Base register (64-bit for global, 32-bit for shared).
    pub base: Reg,
    /// Constant byte offset.
    pub offset: i64,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.offset == 0 {
            write!(f, "[{}]", self.base)
        } else {
            write!(f, "[{}+{}]", self.base, self.offset)
        }
    }
}

/// Special (read-only) registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Special {
    /// `%tid.x`
    TidX,
    /// `%ntid.x`
    NtidX,
    /// `%ctaid.x`
    CtaidX,
    /// `%nctaid.x`
    NctaidX,
}

impl fmt::Display for Special {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Special::TidX => "%tid.x",
            Special::NtidX => "%ntid.x",
            Special::CtaidX => "%ctaid.x",
            Special::NctaidX => "%nctaid.x",
        })
    }
}

/// One-operand operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// `neg`
    Neg,
    /// `abs`
    Abs,
    /// `not` (bitwise)
    Not,
    /// `ex2.approx.ftz.f32`: 2^x.
    Ex2Approx,
    /// `lg2.approx.ftz.f32`: log2(x).
    Lg2Approx,
    /// `rcp.rn`: correctly rounded 1/x.
    Rcp,
    /// `sqrt.rn`
    Sqrt,
    /// `rsqrt.approx`
    RsqrtApprox,
}

/// Two-operand operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `add` (`add.rn` on floats)
    Add,
    /// `sub`
    Sub,
    /// `mul.lo` on integers, `mul.rn` on floats.
    Mul,
    /// `mul.wide`: the full-width product of two 32-bit integers (64-bit result).
    MulWide,
    /// `mul.hi`
    MulHi,
    /// `div` (`div.rn` on floats)
    Div,
    /// `rem`
    Rem,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `and`
    And,
    /// `or`
    Or,
    /// `xor`
    Xor,
    /// `shl`
    Shl,
    /// `shr` (arithmetic on signed types)
    Shr,
}

/// Three-operand operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TernOp {
    /// `fma.rn` (floats)
    Fma,
    /// `mad.lo` (integers)
    MadLo,
    /// `mad.wide` (32-bit operands, 64-bit addend and result)
    MadWide,
}

/// Comparisons of `setp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmp {
    /// ==
    Eq,
    /// !=
    Ne,
    /// <
    Lt,
    /// <=
    Le,
    /// >
    Gt,
    /// >=
    Ge,
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cmp::Eq => "eq",
            Cmp::Ne => "ne",
            Cmp::Lt => "lt",
            Cmp::Le => "le",
            Cmp::Gt => "gt",
            Cmp::Ge => "ge",
        })
    }
}

/// Warp shuffle modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShflMode {
    /// Exchange with lane `lane ^ b`.
    Bfly,
    /// Read from lane `lane + b`.
    Down,
    /// Read from lane `lane - b`.
    Up,
    /// Read from lane `b`.
    Idx,
}

impl fmt::Display for ShflMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShflMode::Bfly => "bfly",
            ShflMode::Down => "down",
            ShflMode::Up => "up",
            ShflMode::Idx => "idx",
        })
    }
}

/// Atomic read-modify-write operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomOp {
    /// `atom.add`
    Add,
    /// `atom.max`
    Max,
}

/// One instruction. Register operands carry their class; `ty` fields are the
/// PTX instruction type suffix.
#[derive(Clone, Debug, PartialEq)]
pub enum Inst {
    /// `mov.ty dst, src`
    Mov {
        /// Type suffix.
        ty: Type,
        /// Destination.
        dst: Reg,
        /// Source.
        src: Operand,
    },
    /// `mov.u32 dst, %special`
    ReadSpecial {
        /// Destination (32-bit).
        dst: Reg,
        /// Which special register.
        src: Special,
    },
    /// `mov.u32 dst, shared_array`: the shared-window address of an array.
    SharedAddr {
        /// Destination (32-bit).
        dst: Reg,
        /// The array.
        array: SharedId,
    },
    /// `ld.param.ty dst, [param]`
    LdParam {
        /// Type suffix.
        ty: Type,
        /// Destination.
        dst: Reg,
        /// The parameter.
        param: ParamId,
    },
    /// `cvta.to.global.u64 dst, src`: a generic pointer parameter to a global address.
    CvtaToGlobal {
        /// Destination.
        dst: Reg,
        /// Source.
        src: Reg,
    },
    /// `op.ty dst, a`
    Unary {
        /// Operation.
        op: UnOp,
        /// Type suffix.
        ty: Type,
        /// Destination.
        dst: Reg,
        /// Operand.
        a: Operand,
    },
    /// `op.ty dst, a, b`
    Binary {
        /// Operation.
        op: BinOp,
        /// Type suffix (the operand type for `mul.wide` / `mad.wide`).
        ty: Type,
        /// Destination.
        dst: Reg,
        /// First operand.
        a: Operand,
        /// Second operand.
        b: Operand,
    },
    /// `op.ty dst, a, b, c`
    Ternary {
        /// Operation.
        op: TernOp,
        /// Type suffix.
        ty: Type,
        /// Destination.
        dst: Reg,
        /// First operand.
        a: Operand,
        /// Second operand.
        b: Operand,
        /// Addend.
        c: Operand,
    },
    /// `setp.cmp.ty dst, a, b`
    Setp {
        /// Comparison.
        cmp: Cmp,
        /// Operand type.
        ty: Type,
        /// Destination predicate.
        dst: Reg,
        /// Left operand.
        a: Operand,
        /// Right operand.
        b: Operand,
    },
    /// `selp.ty dst, a, b, pred`: `pred ? a : b`
    Selp {
        /// Type suffix.
        ty: Type,
        /// Destination.
        dst: Reg,
        /// Value if `pred`.
        a: Operand,
        /// Value otherwise.
        b: Operand,
        /// Predicate.
        pred: Reg,
    },
    /// `cvt[.rnd].dst_ty.src_ty dst, src` (the rounding mode follows from the types).
    Cvt {
        /// Destination type.
        dst_ty: Type,
        /// Source type.
        src_ty: Type,
        /// Destination.
        dst: Reg,
        /// Source.
        src: Reg,
    },
    /// `mov.b32 dst, {lo, hi}`: pack two 16-bit registers.
    Pack {
        /// 32-bit destination.
        dst: Reg,
        /// Low half.
        lo: Reg,
        /// High half.
        hi: Reg,
    },
    /// `mov.b32 {lo, hi}, src`: unpack a 32-bit register.
    Unpack {
        /// Low half.
        lo: Reg,
        /// High half.
        hi: Reg,
        /// 32-bit source.
        src: Reg,
    },
    /// `ld.space[.vN].ty dst, [addr]`
    Ld {
        /// State space.
        space: Space,
        /// Element type.
        ty: Type,
        /// One, two or four destinations.
        dst: Vec<Reg>,
        /// Address.
        addr: Address,
    },
    /// `st.space[.vN].ty [addr], src`
    St {
        /// State space.
        space: Space,
        /// Element type.
        ty: Type,
        /// Address.
        addr: Address,
        /// One, two or four sources.
        src: Vec<Reg>,
    },
    /// `atom.space.op.ty dst, [addr], src`
    Atom {
        /// Operation.
        op: AtomOp,
        /// State space.
        space: Space,
        /// Type suffix.
        ty: Type,
        /// Old value.
        dst: Reg,
        /// Address.
        addr: Address,
        /// Operand.
        src: Operand,
    },
    /// `shfl.sync.mode.b32 dst, src, lane, clamp, 0xffffffff` (whole warp).
    Shfl {
        /// Mode.
        mode: ShflMode,
        /// Destination (32-bit class: `%r` or `%f`).
        dst: Reg,
        /// Value sent by this lane.
        src: Reg,
        /// Lane offset / mask / index.
        lane: Operand,
        /// The `c` operand (clamp and segment mask).
        clamp: u32,
    },
    /// `mov.u32 dst, <kernel>_dsmem`: the shared-window address of the
    /// kernel's dynamic shared memory (sized at launch).
    DynSharedAddr {
        /// Destination (32-bit).
        dst: Reg,
    },
    /// `ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16 {dst}, [addr]`: one,
    /// two or four 8x8 16-bit matrices from shared memory into mma fragments.
    Ldmatrix {
        /// One 32-bit destination per matrix.
        dst: Vec<Reg>,
        /// Transpose each matrix.
        trans: bool,
        /// This lane's row address (32-bit shared).
        addr: Address,
    },
    /// `mma.sync.aligned.m16n8k16.row.col.f32.ab.ab.f32 d, a, b, c` for f16 /
    /// bf16 operands, `m16n8k8` for tf32 (warp-wide).
    Mma {
        /// Element type of A and B (`f16`, `bf16` or `tf32`).
        ab: Type,
        /// Four f32 results.
        d: [Reg; 4],
        /// Four 32-bit registers of A (16x16, row-major fragments).
        a: [Reg; 4],
        /// Two 32-bit registers of B (16x8, column-major fragments).
        b: [Reg; 2],
        /// Four f32 addends.
        c: [Reg; 4],
    },
    /// `cp.async.cg.shared.global [dst], [src], 16, src_bytes` (or, for 4 or
    /// 8 bytes, `cp.async.ca`, the only form of those sizes): an
    /// asynchronous copy of `bytes` bytes; bytes past `src_bytes` (0 or
    /// `bytes`) are zero-filled.
    CpAsync {
        /// Shared destination (32-bit base).
        dst: Address,
        /// Global source (64-bit base).
        src: Address,
        /// Bytes copied: 16, or 4 / 8 (per-row scalars, e.g. the attention
        /// backward's `lse` and `delta` of a query block).
        bytes: u32,
        /// Bytes read from `src` (the rest of `bytes` are zeros).
        src_bytes: Operand,
    },
    /// `cp.async.commit_group`
    CpAsyncCommit,
    /// `cp.async.wait_group n`: waits until at most `n` groups are pending.
    CpAsyncWait {
        /// Groups that may stay in flight.
        n: u32,
    },
    /// `wgmma.fence.sync.aligned`: orders this warpgroup's earlier register
    /// accesses (accumulators, A fragments) before the `wgmma.mma_async`s
    /// that follow. Needed before the first `mma_async` of a batch whenever
    /// those registers were touched by other instructions (warpgroup-wide).
    WgmmaFence,
    /// `wgmma.mma_async.sync.aligned.m64nNk16.f32.ab.ab`: the warpgroup's
    /// asynchronous `D = (accumulate ? D : 0) + A B` for a 64 x 16 A, a
    /// 16 x N B from shared memory and a 64 x N f32 D (see [`WgmmaMma`]).
    /// Its registers must not be touched until a `wgmma.wait_group` retires
    /// its commit group.
    WgmmaMmaAsync(Box<WgmmaMma>),
    /// `wgmma.commit_group.sync.aligned`: closes a group of the
    /// `wgmma.mma_async`s issued since the previous commit.
    WgmmaCommit,
    /// `wgmma.wait_group.sync.aligned n`: waits until at most `n` `wgmma`
    /// groups are pending.
    WgmmaWait {
        /// Groups that may stay in flight.
        n: u32,
    },
    /// `fence.proxy.async.shared::cta`: orders this thread's generic-proxy
    /// shared-memory writes (`st.shared`) before later async-proxy reads
    /// of them (`wgmma` operands read through descriptors).
    FenceProxyAsyncShared,
    /// `mov.b64 dst, param; cvta.param.u64 dst, dst`: the generic address
    /// of a by-value parameter (a [`ParamType::TensorMap`], which
    /// `cp.async.bulk.tensor` reads in place: no copy to local memory).
    ParamAddr {
        /// Destination (64-bit).
        dst: Reg,
        /// The parameter.
        param: ParamId,
    },
    /// `mbarrier.init.shared::cta.b64 [addr], count`: an mbarrier object
    /// whose phases complete after `count` arrivals (and their transaction
    /// bytes).
    MbarrierInit {
        /// The 8-byte-aligned object (32-bit shared).
        addr: Address,
        /// Expected arrivals per phase.
        count: u32,
    },
    /// `fence.mbarrier_init.release.cluster`: makes `mbarrier.init`s
    /// visible to the async proxy (the bulk copies' `complete_tx`).
    FenceMbarrierInit,
    /// `mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [addr], bytes`:
    /// one arrival that also expects `bytes` more transaction bytes (the
    /// bulk copies this thread issues next complete them).
    MbarrierArriveExpectTx {
        /// The mbarrier (32-bit shared).
        addr: Address,
        /// Transaction bytes (u32).
        bytes: Operand,
    },
    /// `mbarrier.arrive.release.cta.shared::cta.b64 _, [addr]`: one arrival
    /// (a consumer handing a stage back to the thread that refills it).
    MbarrierArrive {
        /// The mbarrier (32-bit shared).
        addr: Address,
    },
    /// `mbarrier.try_wait.parity.shared::cta.b64 done, [addr], parity`:
    /// `done` is true once the phase of parity `parity` has completed (the
    /// wait may time out: loop on it).
    MbarrierTryWait {
        /// Predicate result.
        done: Reg,
        /// The mbarrier (32-bit shared).
        addr: Address,
        /// The phase parity waited for (0 or 1, u32).
        parity: Operand,
    },
    /// `cp.async.bulk.tensor.Nd.shared::cluster.global.tile.mbarrier::complete_tx::bytes
    /// [dst], [map, {coords}], [mbar]`: the TMA copy of one box of the
    /// tensor map at generic address `map` whose first element is at
    /// `coords` (innermost first, s32; elements outside the array read as
    /// zeros) to shared `dst`, completing its bytes on `mbar`.
    TmaLoad {
        /// Shared destination (32-bit; aligned to the swizzle pattern).
        dst: Address,
        /// Generic address of the tensor map (64-bit, [`Inst::ParamAddr`]).
        map: Reg,
        /// Box coordinates, innermost first (1 to 5, s32).
        coords: Vec<Operand>,
        /// The mbarrier (32-bit shared).
        mbar: Address,
    },
    /// `elect.sync _|leader, 0xffffffff`: `leader` is true in exactly one
    /// lane of the (converged, full) warp.
    ElectSync {
        /// Predicate result.
        leader: Reg,
    },
    /// `bar.sync id`: CTA-wide barrier; with `threads`, `bar.sync id, threads`:
    /// a named barrier of that many threads (whole warps), such as the
    /// consumer warpgroups of a warp-specialized kernel.
    BarSync {
        /// Barrier number (below 16; u32).
        id: Operand,
        /// Threads that meet there (a multiple of 32); `None`: the CTA.
        threads: Option<u32>,
    },
    /// `bar.arrive id, threads`: this warp counts towards named barrier
    /// `id` of `threads` threads without waiting for it (the consumer
    /// warpgroups' ping-pong: one signals the other's turn).
    BarArrive {
        /// Barrier number (below 16; u32).
        id: Operand,
        /// Threads that meet there (a multiple of 32).
        threads: u32,
    },
    /// `setmaxnreg.{inc,dec}.sync.aligned.u32 count`: the warpgroup's
    /// registers per thread become `count` (a multiple of 8 in 24..=256),
    /// handing registers from producer warpgroups to consumer ones.
    Setmaxnreg {
        /// `inc` (wait until that many are free) or `dec` (release).
        inc: bool,
        /// Registers per thread.
        count: u32,
    },
    /// `bar.warp.sync -1`: the lanes of a warp wait for each other, and
    /// their shared-memory writes before it are seen by the others after it.
    WarpSync,
    /// A branch target.
    Label(Label),
    /// `bra target` (make it conditional with a guard on its [`Stmt`]).
    Bra {
        /// Target label.
        target: Label,
    },
    /// `ret`
    Ret,
}

/// Swizzle mode of a shared-memory matrix of a `wgmma` descriptor: the
/// 16-byte chunks of each row of `S` bytes are permuted by XOR with the
/// row's index within a repeating pattern of 8 rows (`S` = 32, 64, 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Swizzle {
    /// Interleaved 8 x 16-byte core matrices, no permutation.
    None,
    /// Rows of 32 bytes.
    B32,
    /// Rows of 64 bytes.
    B64,
    /// Rows of 128 bytes.
    B128,
}

impl Swizzle {
    /// The descriptor's 2-bit swizzle field (bits 62-63).
    fn field(self) -> u64 {
        match self {
            Swizzle::None => 0,
            Swizzle::B128 => 1,
            Swizzle::B64 => 2,
            Swizzle::B32 => 3,
        }
    }
}

/// The constant fields of a `wgmma` shared-memory matrix descriptor (PTX
/// ISA, "Matrix Descriptor Format"): everything but the start address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatrixLayout {
    /// Leading-dimension byte offset (a multiple of 16).
    pub lbo: u32,
    /// Stride-dimension byte offset (a multiple of 16).
    pub sbo: u32,
    /// Swizzle mode (the matrix's start must then be aligned to the
    /// pattern: 1024 bytes for [`Swizzle::B128`]).
    pub swizzle: Swizzle,
}

impl MatrixLayout {
    /// The descriptor of a matrix at shared byte address 0; the descriptor
    /// of one at `addr` (below 256 KiB) adds `addr >> 4`.
    pub fn descriptor_bits(self) -> u64 {
        (u64::from(self.lbo >> 4) << 16)
            | (u64::from(self.sbo >> 4) << 32)
            | (self.swizzle.field() << 62)
    }
}

/// Where [`WgmmaMma`] takes its A operand from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WgmmaA {
    /// Four 32-bit registers per thread: each warp's 16 rows of the 64 x 16
    /// A in the fragment layout of `mma.m16n8k16`'s A (two 16-bit elements
    /// per register).
    Regs([Reg; 4]),
    /// A 64-bit shared-memory descriptor of a 64 x 16 A (K-major, or
    /// M-major with [`WgmmaMma::trans_a`]).
    Desc(Reg),
}

/// One `wgmma.mma_async.sync.aligned.m64nNk16.f32.ab.ab` of [`Inst::WgmmaMmaAsync`]
/// (f32 accumulation; N is twice the number of accumulator registers).
#[derive(Clone, Debug, PartialEq)]
pub struct WgmmaMma {
    /// Element type of A and B: `f16` or `bf16`.
    pub ab: Type,
    /// The `N / 2` f32 accumulators of each thread (N = 8 .. 256 by 8), in
    /// the fragment layout of `N / 8` `mma.m16n8` accumulator tiles.
    pub d: Vec<Reg>,
    /// Matrix A.
    pub a: WgmmaA,
    /// 64-bit shared-memory descriptor of B (16 x N).
    pub b: Reg,
    /// `scale-d`: add to D (true) or overwrite it (false).
    pub accumulate: bool,
    /// `imm-scale-a = -1`: negate A.
    pub negate_a: bool,
    /// `imm-trans-a`: A (from a descriptor only) is stored M-major (rows
    /// of M along memory) instead of K-major.
    pub trans_a: bool,
    /// `imm-trans-b`: B is stored N-major (rows of N along memory) instead
    /// of K-major.
    pub trans_b: bool,
}

impl WgmmaMma {
    /// N of the `m64nNk16` shape.
    pub fn n(&self) -> usize {
        2 * self.d.len()
    }
}

/// A guard predicate: `@p` or `@!p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guard {
    /// The predicate register.
    pub pred: Reg,
    /// True for `@!p`.
    pub negate: bool,
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negate {
            write!(f, "@!{}", self.pred)
        } else {
            write!(f, "@{}", self.pred)
        }
    }
}

/// A statement: an instruction, executed only where its guard holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// Optional predicate.
    pub guard: Option<Guard>,
    /// The instruction.
    pub inst: Inst,
}

/// One PTX `.entry`.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Entry name.
    pub name: String,
    /// Parameters in order.
    pub params: Vec<Param>,
    /// Static shared arrays (`<name>_smem<i>` in the PTX).
    pub shared: Vec<SharedArray>,
    /// The body.
    pub body: Vec<Stmt>,
    /// Number of registers of each class (indexed like [`RegClass::ALL`]).
    pub reg_counts: [u32; 6],
    /// The block size the kernel is written for (`.maxntid`).
    pub block_threads: u32,
    /// `.minnctapersm`: CTAs that must fit on one SM at once. Kernels that
    /// run few large CTAs per SM (tensor-core tiles, big shared memory) set
    /// it to 1, so ptxas does not trade spills for an occupancy it never gets.
    pub min_ctas_per_sm: Option<u32>,
}

impl Kernel {
    /// Registers declared for `class`.
    pub fn reg_count(&self, class: RegClass) -> u32 {
        self.reg_counts[class.index()]
    }

    /// Bytes of static shared memory.
    pub fn shared_bytes(&self) -> u32 {
        self.shared.iter().map(SharedArray::bytes).sum()
    }

    /// The PTX name of a shared array.
    pub fn shared_name(&self, id: SharedId) -> String {
        format!("{}_smem{}", self.name, id.0)
    }
}

/// Several kernels printed into one PTX module.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct KernelModule {
    /// The kernels, in launch order.
    pub kernels: Vec<Kernel>,
}

//! The SIMT kernel IR: what one PTX `.entry` says, as plain Rust data.
//!
//! A [`Kernel`] has typed parameters, virtual registers of a few register
//! classes, static shared arrays and a flat body of (optionally predicated)
//! statements with labels and branches. It maps almost 1:1 onto PTX, so the
//! printer in [`crate::ptx`] stays trivial. [`KernelBuilder`] is the way to
//! write one: it hands out fresh registers and labels and offers structured
//! helpers (grid-stride loops, `if` blocks) on top of the flat body.

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

    fn index(self) -> usize {
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
    /// IEEE double.
    F64,
}

impl Type {
    /// Size in bytes (a predicate counts as 1).
    pub fn size(self) -> u32 {
        match self {
            Type::Pred | Type::B8 | Type::U8 | Type::S8 => 1,
            Type::B16 | Type::U16 | Type::S16 | Type::F16 | Type::Bf16 => 2,
            Type::B32 | Type::U32 | Type::S32 | Type::F32 => 4,
            Type::B64 | Type::U64 | Type::S64 | Type::F64 => 8,
        }
    }

    /// The register class a value of this type is held in.
    pub fn reg_class(self) -> RegClass {
        match self {
            Type::Pred => RegClass::Pred,
            Type::B8 | Type::U8 | Type::S8 | Type::B32 | Type::U32 | Type::S32 => RegClass::B32,
            Type::B16 | Type::U16 | Type::S16 | Type::F16 | Type::Bf16 => RegClass::B16,
            Type::B64 | Type::U64 | Type::S64 => RegClass::B64,
            Type::F32 => RegClass::F32,
            Type::F64 => RegClass::F64,
        }
    }

    /// The untyped-bits type of the same size (`and`, `or`, `shl`... want it).
    pub fn bits(self) -> Type {
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

/// A counted loop opened by [`KernelBuilder::begin_range`] and not yet
/// closed by [`KernelBuilder::end_range`].
#[derive(Debug)]
pub struct RangeLoop {
    /// The loop counter `i`.
    pub counter: Reg,
    ty: Type,
    step: Operand,
    head: Label,
    exit: Label,
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
    /// `mma.sync.aligned.m16n8k16.row.col.f32.ab.ab.f32 d, a, b, c` (warp-wide).
    Mma {
        /// Element type of A and B (`f16` or `bf16`).
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
    /// `cp.async.cg.shared.global [dst], [src], 16, src_bytes`: an asynchronous
    /// 16-byte copy; bytes past `src_bytes` (0 or 16) are zero-filled.
    CpAsync {
        /// Shared destination (32-bit base).
        dst: Address,
        /// Global source (64-bit base).
        src: Address,
        /// Bytes read from `src` (the rest of the 16 are zeros).
        src_bytes: Operand,
    },
    /// `cp.async.commit_group`
    CpAsyncCommit,
    /// `cp.async.wait_group n`: waits until at most `n` groups are pending.
    CpAsyncWait {
        /// Groups that may stay in flight.
        n: u32,
    },
    /// `bar.sync id`: CTA-wide barrier.
    BarSync {
        /// Barrier number.
        id: u32,
    },
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

/// Writes a [`Kernel`]: fresh registers and labels, predicated regions,
/// structured loops, and one method per common instruction.
#[derive(Debug)]
pub struct KernelBuilder {
    kernel: Kernel,
    labels: u32,
    guard: Option<Guard>,
}

impl KernelBuilder {
    /// Starts a kernel named `name` written for `block_threads` threads per CTA.
    pub fn new(name: impl Into<String>, block_threads: u32) -> Self {
        KernelBuilder {
            kernel: Kernel {
                name: name.into(),
                params: Vec::new(),
                shared: Vec::new(),
                body: Vec::new(),
                reg_counts: [0; 6],
                block_threads,
                min_ctas_per_sm: None,
            },
            labels: 0,
            guard: None,
        }
    }

    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.kernel.name
    }

    /// Threads per CTA.
    pub fn block_threads(&self) -> u32 {
        self.kernel.block_threads
    }

    /// Sets `.minnctapersm` (see [`Kernel::min_ctas_per_sm`]).
    pub fn set_min_ctas_per_sm(&mut self, ctas: u32) {
        self.kernel.min_ctas_per_sm = Some(ctas);
    }

    /// Finishes the kernel (appends `ret`).
    pub fn finish(mut self) -> Kernel {
        self.guard = None;
        self.push(Inst::Ret);
        self.kernel
    }

    /// A fresh register of `class`.
    pub fn reg(&mut self, class: RegClass) -> Reg {
        let count = &mut self.kernel.reg_counts[class.index()];
        // PTX `%r<N>` declares %r0..%r(N-1); we start at 1 like nvcc for readability.
        *count += 1;
        Reg {
            class,
            index: *count,
        }
    }

    /// A fresh label (not yet placed).
    pub fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels)
    }

    /// Places `label` here.
    pub fn place(&mut self, label: Label) {
        let saved = self.guard.take();
        self.push(Inst::Label(label));
        self.guard = saved;
    }

    /// Adds a parameter; returns its handle.
    pub fn param(&mut self, name: &str, ty: ParamType) -> ParamId {
        let id = ParamId(self.kernel.params.len() as u32);
        self.kernel.params.push(Param {
            name: format!("{}_{}", self.kernel.name, name),
            ty,
        });
        id
    }

    /// Adds a shared array; returns its handle.
    pub fn shared(&mut self, elem: Type, len: u32) -> SharedId {
        let id = SharedId(self.kernel.shared.len() as u32);
        self.kernel.shared.push(SharedArray {
            elem,
            len,
            align: elem.size().max(4),
        });
        id
    }

    /// Appends an instruction under the current guard.
    pub fn push(&mut self, inst: Inst) {
        self.kernel.body.push(Stmt {
            guard: self.guard,
            inst,
        });
    }

    /// Runs `f` with every instruction it emits guarded by `guard`
    /// (regions do not nest: an inner guard replaces the outer one).
    pub fn guarded<R>(&mut self, guard: Guard, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.guard.replace(guard);
        let r = f(self);
        self.guard = saved;
        r
    }

    /// Emits `f` inside `if (pred != negate) { ... }` with a branch around it.
    pub fn if_then(&mut self, pred: Reg, negate: bool, f: impl FnOnce(&mut Self)) {
        let skip = self.label();
        self.bra_if(pred, !negate, skip);
        f(self);
        self.place(skip);
    }

    /// Unconditional branch.
    pub fn bra(&mut self, target: Label) {
        self.push(Inst::Bra { target });
    }

    /// Branch to `target` if `pred != negate`.
    pub fn bra_if(&mut self, pred: Reg, negate: bool, target: Label) {
        self.kernel.body.push(Stmt {
            guard: Some(Guard { pred, negate }),
            inst: Inst::Bra { target },
        });
    }

    /// Loads a scalar parameter into a fresh register.
    pub fn ld_param(&mut self, param: ParamId) -> Reg {
        let ty = match self.kernel.params[param.0 as usize].ty {
            ParamType::U32 => Type::U32,
            ParamType::U64 | ParamType::Ptr { .. } => Type::U64,
            ParamType::F32 => Type::F32,
        };
        let dst = self.reg(ty.reg_class());
        self.push(Inst::LdParam { ty, dst, param });
        dst
    }

    /// Loads a pointer parameter and converts it to a global address.
    pub fn ld_global_ptr(&mut self, param: ParamId) -> Reg {
        let generic = self.ld_param(param);
        let dst = self.reg(RegClass::B64);
        self.push(Inst::CvtaToGlobal { dst, src: generic });
        dst
    }

    /// Reads a special register into a fresh 32-bit register.
    pub fn special(&mut self, src: Special) -> Reg {
        let dst = self.reg(RegClass::B32);
        self.push(Inst::ReadSpecial { dst, src });
        dst
    }

    /// The shared-window address of `array`.
    pub fn shared_addr(&mut self, array: SharedId) -> Reg {
        let dst = self.reg(RegClass::B32);
        self.push(Inst::SharedAddr { dst, array });
        dst
    }

    /// `mov` into a fresh register of `ty`'s class.
    pub fn mov(&mut self, ty: Type, src: impl Into<Operand>) -> Reg {
        let dst = self.reg(ty.reg_class());
        self.mov_to(ty, dst, src);
        dst
    }

    /// `mov` into an existing register.
    pub fn mov_to(&mut self, ty: Type, dst: Reg, src: impl Into<Operand>) {
        self.push(Inst::Mov {
            ty,
            dst,
            src: src.into(),
        });
    }

    /// `mov.ty` of `src` into a fresh register of `class`: reinterprets bits
    /// (e.g. `mov.b32 %f1, %r1`).
    pub fn bitcast(&mut self, class: RegClass, ty: Type, src: Reg) -> Reg {
        let dst = self.reg(class);
        self.mov_to(ty, dst, src);
        dst
    }

    /// An f32 constant in a fresh register.
    pub fn const_f32(&mut self, v: f32) -> Reg {
        self.mov(Type::F32, Operand::F32(v))
    }

    /// `op.ty` into a fresh register.
    pub fn unary(&mut self, op: UnOp, ty: Type, a: impl Into<Operand>) -> Reg {
        let dst = self.reg(ty.reg_class());
        self.unary_to(op, ty, dst, a);
        dst
    }

    /// `op.ty` into an existing register (in place when `a` is `dst`).
    pub fn unary_to(&mut self, op: UnOp, ty: Type, dst: Reg, a: impl Into<Operand>) {
        self.push(Inst::Unary {
            op,
            ty,
            dst,
            a: a.into(),
        });
    }

    /// A fresh register for the result of an op on `ty` operands: of the
    /// 64-bit class for the `.wide` forms (their result is twice as wide).
    fn result_reg(&mut self, wide: bool, ty: Type) -> Reg {
        let class = if wide { RegClass::B64 } else { ty.reg_class() };
        self.reg(class)
    }

    /// `op.ty` into a fresh register (of the 64-bit class for `mul.wide`).
    pub fn binary(
        &mut self,
        op: BinOp,
        ty: Type,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) -> Reg {
        let dst = self.result_reg(op == BinOp::MulWide, ty);
        self.binary_to(op, ty, dst, a, b);
        dst
    }

    /// `op.ty` into an existing register.
    pub fn binary_to(
        &mut self,
        op: BinOp,
        ty: Type,
        dst: Reg,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) {
        self.push(Inst::Binary {
            op,
            ty,
            dst,
            a: a.into(),
            b: b.into(),
        });
    }

    /// `op.ty dst, a, b, c` into a fresh register (64-bit class for `mad.wide`).
    pub fn ternary(
        &mut self,
        op: TernOp,
        ty: Type,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        c: impl Into<Operand>,
    ) -> Reg {
        let dst = self.result_reg(op == TernOp::MadWide, ty);
        self.ternary_to(op, ty, dst, a, b, c);
        dst
    }

    /// `op.ty dst, a, b, c` into an existing register (an accumulating `fma`).
    pub fn ternary_to(
        &mut self,
        op: TernOp,
        ty: Type,
        dst: Reg,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        c: impl Into<Operand>,
    ) {
        self.push(Inst::Ternary {
            op,
            ty,
            dst,
            a: a.into(),
            b: b.into(),
            c: c.into(),
        });
    }

    /// `setp.cmp.ty` into a fresh predicate.
    pub fn setp(
        &mut self,
        cmp: Cmp,
        ty: Type,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) -> Reg {
        let dst = self.reg(RegClass::Pred);
        self.push(Inst::Setp {
            cmp,
            ty,
            dst,
            a: a.into(),
            b: b.into(),
        });
        dst
    }

    /// `selp.ty` into a fresh register: `pred ? a : b`.
    pub fn selp(
        &mut self,
        ty: Type,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        pred: Reg,
    ) -> Reg {
        let dst = self.reg(ty.reg_class());
        self.push(Inst::Selp {
            ty,
            dst,
            a: a.into(),
            b: b.into(),
            pred,
        });
        dst
    }

    /// `cvt` into a fresh register of `dst_ty`'s class.
    pub fn cvt(&mut self, dst_ty: Type, src_ty: Type, src: Reg) -> Reg {
        let dst = self.reg(dst_ty.reg_class());
        self.push(Inst::Cvt {
            dst_ty,
            src_ty,
            dst,
            src,
        });
        dst
    }

    /// A load of one, two or four elements of `ty` into fresh registers.
    pub fn ld(&mut self, space: Space, ty: Type, width: usize, addr: Address) -> Vec<Reg> {
        let dst: Vec<Reg> = (0..width).map(|_| self.reg(ty.reg_class())).collect();
        self.push(Inst::Ld {
            space,
            ty,
            dst: dst.clone(),
            addr,
        });
        dst
    }

    /// A store of one, two or four registers.
    pub fn st(&mut self, space: Space, ty: Type, addr: Address, src: Vec<Reg>) {
        self.push(Inst::St {
            space,
            ty,
            addr,
            src,
        });
    }

    /// A full-warp shuffle of a 32-bit register.
    pub fn shfl(&mut self, mode: ShflMode, src: Reg, lane: impl Into<Operand>, clamp: u32) -> Reg {
        let dst = self.reg(src.class);
        self.push(Inst::Shfl {
            mode,
            dst,
            src,
            lane: lane.into(),
            clamp,
        });
        dst
    }

    /// `bar.sync 0`.
    pub fn barrier(&mut self) {
        self.push(Inst::BarSync { id: 0 });
    }

    /// The global thread index (`ctaid.x * ntid.x + tid.x`, 64-bit) and the
    /// grid size in threads (64-bit): the start and step of a grid-stride loop.
    pub fn global_thread_index(&mut self) -> (Reg, Reg) {
        let tid = self.special(Special::TidX);
        let ntid = self.special(Special::NtidX);
        let ctaid = self.special(Special::CtaidX);
        let nctaid = self.special(Special::NctaidX);
        let tid64 = self.cvt(Type::U64, Type::U32, tid);
        let start = self.ternary(TernOp::MadWide, Type::U32, ctaid, ntid, tid64);
        let step = self.binary(BinOp::MulWide, Type::U32, nctaid, ntid);
        (start, step)
    }

    /// The CTA index and the grid size in CTAs (both 64-bit): the start and
    /// step of a grid-stride loop that hands each item to a whole CTA.
    pub fn global_block_index(&mut self) -> (Reg, Reg) {
        let ctaid = self.special(Special::CtaidX);
        let nctaid = self.special(Special::NctaidX);
        let first = self.cvt(Type::U64, Type::U32, ctaid);
        let step = self.cvt(Type::U64, Type::U32, nctaid);
        (first, step)
    }

    /// `for (i = start; i < end; i += step) body(i)` over unsigned 64-bit `i`.
    /// `start` is copied, so the caller's register is left unchanged.
    pub fn for_range_u64(
        &mut self,
        start: impl Into<Operand>,
        end: impl Into<Operand>,
        step: impl Into<Operand>,
        body: impl FnOnce(&mut Self, Reg),
    ) {
        self.for_range(Type::U64, start, end, step, body);
    }

    /// `for (i = start; i < end; i += step) body(i)` over unsigned 32-bit `i`.
    pub fn for_range_u32(
        &mut self,
        start: impl Into<Operand>,
        end: impl Into<Operand>,
        step: impl Into<Operand>,
        body: impl FnOnce(&mut Self, Reg),
    ) {
        self.for_range(Type::U32, start, end, step, body);
    }

    fn for_range(
        &mut self,
        ty: Type,
        start: impl Into<Operand>,
        end: impl Into<Operand>,
        step: impl Into<Operand>,
        body: impl FnOnce(&mut Self, Reg),
    ) {
        let range = self.begin_range(ty, start, end, step);
        body(self, range.counter);
        self.end_range(range);
    }

    /// Opens `for (i = start; i < end; i += step)` over `ty`; the body is
    /// what is emitted until [`Self::end_range`]. For writers that wrap the
    /// builder and need themselves in the body (the closure forms
    /// [`Self::for_range_u64`] / [`Self::for_range_u32`] hand it the builder).
    pub fn begin_range(
        &mut self,
        ty: Type,
        start: impl Into<Operand>,
        end: impl Into<Operand>,
        step: impl Into<Operand>,
    ) -> RangeLoop {
        let (end, step) = (end.into(), step.into());
        let counter = self.mov(ty, start);
        let head = self.label();
        let exit = self.label();
        self.place(head);
        let done = self.setp(Cmp::Ge, ty, counter, end);
        self.bra_if(done, false, exit);
        RangeLoop {
            counter,
            ty,
            step,
            head,
            exit,
        }
    }

    /// Closes a loop opened by [`Self::begin_range`]: step and branch back.
    pub fn end_range(&mut self, range: RangeLoop) {
        let i = range.counter;
        self.binary_to(BinOp::Add, range.ty, i, i, range.step);
        self.bra(range.head);
        self.place(range.exit);
    }

    /// Global address `base + index * elem_bytes` (64-bit index).
    pub fn element_addr(&mut self, base: Reg, index: Reg, elem_bytes: u32) -> Reg {
        if elem_bytes == 1 {
            return self.binary(BinOp::Add, Type::U64, base, index);
        }
        self.ternary(
            TernOp::MadLo,
            Type::U64,
            index,
            Operand::Int(i64::from(elem_bytes)),
            base,
        )
    }
}

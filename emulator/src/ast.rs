//! Syntax tree of a PTX module, as written (names unresolved, opcodes as text).

/// A parsed PTX module: its kernels and module-scope variables.
#[derive(Clone, Debug, Default)]
pub struct Module {
    pub kernels: Vec<Kernel>,
    /// Module-scope variables (e.g. Triton's `.extern .shared .b8 global_smem[]`).
    pub vars: Vec<VarDecl>,
}

/// One `.entry` function.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub body: Vec<Stmt>,
    /// `.reqntid x, y, z` (missing dimensions are 1).
    pub reqntid: Option<[u32; 3]>,
    /// `.maxntid x, y, z`.
    pub maxntid: Option<[u32; 3]>,
    pub line: u32,
}

/// One `.param` of a kernel.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    /// Size in bytes (element size times array length).
    pub size: u32,
    pub align: u32,
    /// Whether the element type is a float type (`.f32`, `.f64`).
    pub float: bool,
    pub line: u32,
}

/// State space of a declared variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarSpace {
    Shared,
    Local,
    Global,
    Const,
}

/// A `.shared`, `.local`, `.global` or `.const` variable declaration.
#[derive(Clone, Debug)]
pub struct VarDecl {
    pub space: VarSpace,
    pub name: String,
    pub align: u32,
    pub elem_size: u32,
    /// Number of elements; `None` for an unsized `[]` array (dynamic shared memory).
    pub count: Option<u64>,
    /// Initializer bytes, if any (module-scope `.global`/`.const`).
    pub init: Option<Vec<u8>>,
    pub line: u32,
    pub col: u32,
}

/// A statement of a kernel body.
#[derive(Clone, Debug)]
pub enum Stmt {
    /// `.reg .ty names;` (ranges already expanded).
    Reg {
        ty: String,
        names: Vec<String>,
        line: u32,
        col: u32,
    },
    Var(VarDecl),
    Label(String, u32, u32),
    Inst(Inst),
    /// `{`: opens a register scope.
    BlockStart,
    /// `}`: closes it.
    BlockEnd,
}

/// One instruction, as written.
#[derive(Clone, Debug)]
pub struct Inst {
    /// Guard predicate: register name and whether it is negated (`@!%p`).
    pub guard: Option<(String, bool)>,
    /// The full opcode with modifiers, e.g. `ld.global.nc.v4.b32`.
    pub opcode: String,
    pub operands: Vec<Operand>,
    pub line: u32,
    pub col: u32,
}

/// An instruction operand, as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A register, special register, label or symbol name.
    Name(String),
    /// `!name` (negated predicate).
    Not(String),
    /// `p|q` (the two destinations of setp).
    Pair(String, String),
    /// Integer immediate (two's complement bits).
    Int(u64),
    /// `0fXXXXXXXX` immediate bits.
    F32(u32),
    /// `0d...` or decimal floating immediate.
    F64(f64),
    /// `_` (sink).
    Sink,
    /// `{a, b, ...}`.
    Vector(Vec<Operand>),
    /// `[base + offset]`: base is a register or symbol name, or absent for `[imm]`.
    Address { base: Option<String>, offset: i64 },
    /// `[tensorMap, {c0, c1, ...}]`: a tensor map and coordinates (bulk tensor copies).
    Tensor { base: String, coords: Vec<Operand> },
}

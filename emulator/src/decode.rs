//! Lowering of the syntax tree to pre-decoded kernels ([`KernelCode`]).

use std::collections::HashMap;

use crate::ast::{self, Operand, Stmt, VarSpace};
use crate::error::EmuError;
use crate::ir::*;
use crate::profile::Class;

mod asyncs;
mod wgmma;

/// A kernel parameter as laid out in the parameter buffer.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub float: bool,
    pub line: u32,
}

/// A kernel, decoded and ready to run.
#[derive(Clone, Debug)]
pub struct KernelCode {
    pub name: String,
    pub params: Vec<ParamInfo>,
    pub param_bytes: u32,
    pub code: Vec<Instr>,
    /// Number of register slots per thread.
    pub nregs: u32,
    /// Bytes of static shared memory; dynamic shared memory starts at `dynamic_offset`.
    pub static_shared: u32,
    pub dynamic_offset: u32,
    /// Bytes of `.local` memory per thread.
    pub local_bytes: u32,
    pub reqntid: Option<[u32; 3]>,
    pub maxntid: Option<[u32; 3]>,
    /// The checker's facts about `wgmma` registers; `None` without `wgmma.mma_async`.
    pub wgmma: Option<crate::wgmma::KernelInfo>,
}

/// Generic-address window where module-scope `.global`/`.const` variables live.
pub const MODULE_WINDOW: u64 = 0x0300_0000_0000_0000;

/// Decodes every kernel of a parsed module; also returns the initial bytes of the
/// module-scope `.global`/`.const` variables (at [`MODULE_WINDOW`]).
pub fn decode_module(m: &ast::Module) -> Result<(Vec<KernelCode>, Vec<u8>), EmuError> {
    let mut data = Vec::new();
    let mut globals = HashMap::new();
    for v in &m.vars {
        if !matches!(v.space, VarSpace::Global | VarSpace::Const) {
            continue;
        }
        let Some(n) = v.count else {
            return Err(EmuError::Unsupported {
                line: v.line,
                column: v.col,
                what: format!("unsized module-scope variable `{}`", v.name),
            });
        };
        let (off, end) = place_var(data.len() as u32, v, n)?;
        if end > MAX_MODULE_DATA_BYTES {
            return Err(too_large(v, MAX_MODULE_DATA_BYTES));
        }
        let (off, size) = (off as usize, (end - off) as usize);
        data.resize(off, 0);
        let mut bytes = v.init.clone().unwrap_or_default();
        bytes.resize(size, 0);
        data.extend(bytes);
        globals.insert(v.name.clone(), MODULE_WINDOW + off as u64);
    }
    let kernels = m
        .kernels
        .iter()
        .map(|k| decode_kernel(k, &m.vars, &globals))
        .collect::<Result<_, _>>()?;
    Ok((kernels, data))
}

#[derive(Clone, Copy)]
enum Symbol {
    Global(u64),
    Shared(u32),
    Local(u32),
    Param(u32),
}

struct Decoder<'a> {
    kernel: &'a str,
    scopes: Vec<HashMap<String, (u32, Ty)>>,
    nregs: u32,
    symbols: HashMap<String, Symbol>,
    /// Labels by (block, name): PTX scopes a label to its `{ }` block, so Triton's inline
    /// `waitLoop:` can appear in several blocks of one kernel. Block 0 is the body.
    labels: HashMap<(u32, String), u32>,
    /// The blocks open at the instruction being decoded, innermost last.
    blocks: Vec<u32>,
    line: u32,
    col: u32,
}

/// Most bytes of module-scope `.global`/`.const` variables.
const MAX_MODULE_DATA_BYTES: u32 = 1 << 30;
/// Most registers of a kernel (each is 256 bytes of emulator state per warp).
const MAX_REGS: usize = 1 << 17;
/// Most bytes of `.local` variables per thread (CUDA's limit).
const MAX_LOCAL_BYTES: u32 = 512 * 1024;

fn too_large(v: &ast::VarDecl, limit: u32) -> EmuError {
    EmuError::Unsupported {
        line: v.line,
        column: v.col,
        what: format!(
            "variable `{}` does not fit: its state space holds at most {limit} bytes",
            v.name
        ),
    }
}

/// Start and end offsets of `count` elements of `v` placed at or after `off` with its
/// alignment; an error when they do not fit in 32 bits.
fn place_var(off: u32, v: &ast::VarDecl, count: u64) -> Result<(u32, u32), EmuError> {
    u32::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(v.elem_size))
        .and_then(|size| {
            let start = off.checked_next_multiple_of(v.align.max(1))?;
            Some((start, start.checked_add(size)?))
        })
        .ok_or_else(|| too_large(v, u32::MAX))
}

fn decode_kernel(
    k: &ast::Kernel,
    module_vars: &[ast::VarDecl],
    globals: &HashMap<String, u64>,
) -> Result<KernelCode, EmuError> {
    let mut d = Decoder {
        kernel: &k.name,
        scopes: vec![HashMap::new()],
        nregs: 0,
        symbols: HashMap::new(),
        labels: HashMap::new(),
        blocks: vec![0],
        line: k.line,
        col: 1,
    };
    // Parameters.
    let mut params = Vec::new();
    let mut off = 0u32;
    for p in &k.params {
        let placed = off
            .checked_next_multiple_of(p.align.max(1))
            .and_then(|o| Some((o, o.checked_add(p.size)?)));
        let Some((start, end)) = placed else {
            return Err(EmuError::Unsupported {
                line: p.line,
                column: 1,
                what: format!(
                    "parameter `{}` ({} bytes, .align {}) does not fit in the parameter space",
                    p.name, p.size, p.align
                ),
            });
        };
        params.push(ParamInfo {
            name: p.name.clone(),
            offset: start,
            size: p.size,
            float: p.float,
            line: p.line,
        });
        d.symbols.insert(p.name.clone(), Symbol::Param(start));
        off = end;
    }
    let param_bytes = off;
    if param_bytes > crate::parser::MAX_PARAM_BYTES {
        return Err(EmuError::Unsupported {
            line: k.line,
            column: 1,
            what: format!(
                "kernel `{}` has {param_bytes} bytes of parameters; the limit is {}",
                k.name,
                crate::parser::MAX_PARAM_BYTES
            ),
        });
    }
    for (name, addr) in globals {
        d.symbols.insert(name.clone(), Symbol::Global(*addr));
    }
    // Shared and local variables (module scope first, then the kernel's own).
    let mut shared = 0u32;
    let mut local = 0u32;
    let mut externs = Vec::new();
    let kernel_vars = k.body.iter().filter_map(|s| match s {
        Stmt::Var(v) => Some(v),
        _ => None,
    });
    let module_vars = module_vars
        .iter()
        .filter(|v| !globals.contains_key(&v.name));
    for v in module_vars.chain(kernel_vars) {
        match (v.space, v.count) {
            (VarSpace::Shared, None) => externs.push(v),
            (VarSpace::Shared, Some(n)) => {
                let (start, end) = place_var(shared, v, n)?;
                d.symbols.insert(v.name.clone(), Symbol::Shared(start));
                shared = end;
            }
            (VarSpace::Local, Some(n)) => {
                let (start, end) = place_var(local, v, n)?;
                if end > MAX_LOCAL_BYTES {
                    return Err(too_large(v, MAX_LOCAL_BYTES));
                }
                d.symbols.insert(v.name.clone(), Symbol::Local(start));
                local = end;
            }
            _ => {
                return Err(EmuError::Unsupported {
                    line: v.line,
                    column: v.col,
                    what: format!("declaration of `{}` in this state space", v.name),
                });
            }
        }
        if v.init.is_some() {
            return Err(EmuError::Unsupported {
                line: v.line,
                column: v.col,
                what: format!("initializer on `{}`", v.name),
            });
        }
    }
    let ext_align = externs.iter().map(|v| v.align).max().unwrap_or(1);
    let dynamic_offset = shared
        .checked_next_multiple_of(ext_align.max(1))
        .ok_or_else(|| EmuError::Unsupported {
            line: k.line,
            column: 1,
            what: format!("kernel `{}`: its shared variables do not fit", k.name),
        })?;
    for v in externs {
        d.symbols
            .insert(v.name.clone(), Symbol::Shared(dynamic_offset));
    }
    // Labels, numbering the blocks in order as the instruction pass below does.
    let mut n = 0u32;
    let (mut blocks, mut next_block) = (vec![0u32], 0u32);
    for s in &k.body {
        match s {
            Stmt::Inst(_) => n += 1,
            Stmt::BlockStart => {
                next_block += 1;
                blocks.push(next_block);
            }
            Stmt::BlockEnd => {
                blocks.pop();
            }
            Stmt::Label(name, line, col) => {
                let block = blocks.last().copied().unwrap_or(0);
                if d.labels.insert((block, name.clone()), n).is_some() {
                    return Err(EmuError::Parse {
                        line: *line,
                        column: *col,
                        message: format!("label `{name}` defined twice"),
                    });
                }
            }
            _ => {}
        }
    }
    next_block = 0;
    // Instructions.
    let mut code = Vec::with_capacity(n as usize + 1);
    for s in &k.body {
        match s {
            Stmt::Reg {
                ty,
                names,
                line,
                col,
            } => {
                d.line = *line;
                d.col = *col;
                let t = Ty::from_name(ty)
                    .ok_or_else(|| d.unsupported(format!("register type .{ty}")))?;
                if d.nregs as usize + names.len() > MAX_REGS {
                    return Err(d.unsupported(format!(
                        "more than {MAX_REGS} registers in kernel `{}`",
                        k.name
                    )));
                }
                for name in names {
                    let slot = d.nregs;
                    d.nregs += 1;
                    d.scopes
                        .last_mut()
                        .map(|s| s.insert(name.clone(), (slot, t)));
                }
            }
            Stmt::BlockStart => {
                d.scopes.push(HashMap::new());
                next_block += 1;
                d.blocks.push(next_block);
            }
            Stmt::BlockEnd => {
                d.scopes.pop();
                d.blocks.pop();
            }
            Stmt::Var(_) | Stmt::Label(..) => {}
            Stmt::Inst(i) => code.push(d.inst(i)?),
        }
    }
    // Falling off the end of a kernel exits.
    code.push(Instr {
        class: Class::Other,
        op: Op::Exit,
        guard: None,
        line: 0,
        col: 0,
    });
    Ok(KernelCode {
        name: k.name.clone(),
        params,
        param_bytes,
        nregs: d.nregs.max(1),
        static_shared: shared,
        dynamic_offset,
        local_bytes: local,
        reqntid: k.reqntid,
        maxntid: k.maxntid,
        wgmma: crate::wgmma::KernelInfo::new(&code),
        code,
    })
}

/// The modifiers of an opcode, consumed as the decoder recognizes them.
struct Mods<'a> {
    name: &'a str,
    list: Vec<&'a str>,
}

/// Modifiers about caching, memory ordering and scope: they do not change results here.
const IGNORED: &[&str] = &[
    "nc",
    "ca",
    "cg",
    "cs",
    "lu",
    "cv",
    "wb",
    "wt",
    "relaxed",
    "acquire",
    "release",
    "acq_rel",
    "sc",
    "weak",
    "volatile",
    "mmio",
    "cta",
    "gpu",
    "sys",
    "cluster",
    "aligned",
    "sync",
    "uni",
    "L1::evict_last",
    "L1::evict_first",
    "L1::evict_normal",
    "L1::evict_unchanged",
    "L1::no_allocate",
    "L2::evict_last",
    "L2::evict_first",
    "L2::evict_normal",
    "L2::64B",
    "L2::128B",
    "L2::256B",
    "L2::evict_unchanged",
    "level::eviction_priority",
    // Announces a cache-policy operand, which ld/st/cp.async accept and ignore.
    "L2::cache_hint",
];

/// The operation modifiers of `atom`/`red` (and, a subset, of `redux`).
const ATOM_OPS: &[(&str, AtomOp)] = &[
    ("add", AtomOp::Add),
    ("min", AtomOp::Min),
    ("max", AtomOp::Max),
    ("exch", AtomOp::Exch),
    ("cas", AtomOp::Cas),
    ("and", AtomOp::And),
    ("or", AtomOp::Or),
    ("xor", AtomOp::Xor),
    ("inc", AtomOp::Inc),
    ("dec", AtomOp::Dec),
];

impl<'a> Mods<'a> {
    fn new(opcode: &'a str) -> Mods<'a> {
        let mut it = opcode.split('.');
        let name = it.next().unwrap_or("");
        Mods {
            name,
            list: it.collect(),
        }
    }

    fn take(&mut self, m: &str) -> bool {
        match self.list.iter().position(|x| *x == m) {
            Some(i) => {
                self.list.remove(i);
                true
            }
            None => false,
        }
    }

    fn take_any(&mut self, set: &[&'a str]) -> Option<&'a str> {
        let i = self.list.iter().position(|x| set.contains(x))?;
        Some(self.list.remove(i))
    }

    /// Removes the first modifier named in `modes` and returns the value it stands for.
    fn take_mode<T: Copy>(&mut self, modes: &[(&str, T)]) -> Option<T> {
        let (i, v) = self.list.iter().enumerate().find_map(|(i, x)| {
            let (_, v) = modes.iter().find(|(name, _)| name == x)?;
            Some((i, *v))
        })?;
        self.list.remove(i);
        Some(v)
    }

    /// Removes and returns the first type modifier.
    fn ty(&mut self) -> Option<Ty> {
        let i = self.list.iter().position(|x| Ty::from_name(x).is_some())?;
        Ty::from_name(self.list.remove(i))
    }

    fn rnd(&mut self) -> Rnd {
        self.take_mode(&[
            ("rn", Rnd::Rn),
            ("rz", Rnd::Rz),
            ("rm", Rnd::Rm),
            ("rp", Rnd::Rp),
            ("rna", Rnd::Rna),
            ("rni", Rnd::Rni),
            ("rzi", Rnd::Rzi),
            ("rmi", Rnd::Rmi),
            ("rpi", Rnd::Rpi),
        ])
        .unwrap_or(Rnd::Default)
    }

    fn space(&mut self) -> Option<MemSpace> {
        Some(
            match self.take_any(&[
                "global",
                "shared",
                "shared::cta",
                "local",
                "param",
                "param::entry",
                "const",
            ])? {
                "global" => MemSpace::Global,
                "shared" | "shared::cta" => MemSpace::Shared,
                "local" => MemSpace::Local,
                "const" => MemSpace::Global,
                _ => MemSpace::Param,
            },
        )
    }

    fn vector(&mut self) -> usize {
        self.take_mode(&[("v2", 2), ("v4", 4), ("v8", 8)])
            .unwrap_or(1)
    }
}

impl Decoder<'_> {
    fn unsupported(&self, what: String) -> EmuError {
        EmuError::Unsupported {
            line: self.line,
            column: self.col,
            what: format!("{what} (kernel `{}`)", self.kernel),
        }
    }

    fn bad(&self, message: String) -> EmuError {
        EmuError::Parse {
            line: self.line,
            column: self.col,
            message,
        }
    }

    /// Decodes the modifiers of a warp-synchronous `shfl`/`vote`: one of `modes`, the
    /// required `.sync` and a type.
    fn sync_mode<T: Copy>(
        &self,
        m: &mut Mods,
        opcode: &str,
        modes: &[(&str, T)],
    ) -> Result<T, EmuError> {
        let mode = m
            .take_mode(modes)
            .ok_or_else(|| self.bad(format!("{} needs a mode", m.name)))?;
        if !m.take("sync") {
            return Err(self.unsupported(format!("{} without .sync", m.name)));
        }
        if m.ty().is_none() {
            return Err(self.bad(format!("`{opcode}` needs a type")));
        }
        self.finish(m, opcode)?;
        Ok(mode)
    }

    fn finish(&self, m: &Mods, opcode: &str) -> Result<(), EmuError> {
        for x in &m.list {
            if !IGNORED.contains(x) {
                return Err(self.unsupported(format!("modifier `.{x}` in `{opcode}`")));
            }
        }
        Ok(())
    }

    fn reg(&self, name: &str) -> Option<(u32, Ty)> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    /// The instruction index of label `name` as seen from the current block: its own
    /// block's label, else the nearest enclosing block's.
    fn label(&self, name: &str) -> Option<u32> {
        self.blocks
            .iter()
            .rev()
            .find_map(|&b| self.labels.get(&(b, name.to_string())).copied())
    }

    fn sreg(name: &str) -> Option<Sreg> {
        let dim = |s: &str| match s {
            "x" => Some(0u8),
            "y" => Some(1),
            "z" => Some(2),
            _ => None,
        };
        if let Some((base, c)) = name.split_once('.') {
            let c = dim(c)?;
            return Some(match base {
                "%tid" => Sreg::Tid(c),
                "%ntid" => Sreg::Ntid(c),
                "%ctaid" => Sreg::Ctaid(c),
                "%nctaid" => Sreg::Nctaid(c),
                _ => return None,
            });
        }
        Some(match name {
            "%laneid" => Sreg::LaneId,
            "%warpid" => Sreg::WarpId,
            "%nwarpid" => Sreg::NWarpId,
            "%clock" => Sreg::Clock,
            "%clock64" => Sreg::Clock64,
            "%lanemask_eq" => Sreg::LanemaskEq,
            "%lanemask_lt" => Sreg::LanemaskLt,
            "%lanemask_le" => Sreg::LanemaskLe,
            "%lanemask_gt" => Sreg::LanemaskGt,
            "%lanemask_ge" => Sreg::LanemaskGe,
            "%smid" => Sreg::SmId,
            "%dynamic_smem_size" => Sreg::DynamicSmemSize,
            "%total_smem_size" => Sreg::TotalSmemSize,
            _ => return None,
        })
    }

    /// A source operand, with immediates encoded for type `ty`.
    fn src(&self, o: &Operand, ty: Ty) -> Result<Src, EmuError> {
        Ok(match o {
            Operand::Name(n) => {
                if let Some((slot, _)) = self.reg(n) {
                    Src::Reg(slot)
                } else if let Some(s) = Self::sreg(n) {
                    Src::Sreg(s)
                } else {
                    match self.symbols.get(n) {
                        Some(Symbol::Shared(off))
                        | Some(Symbol::Local(off))
                        | Some(Symbol::Param(off)) => Src::Imm(*off as u64),
                        Some(Symbol::Global(a)) => Src::Imm(*a),
                        None => return Err(self.bad(format!("unknown register or symbol `{n}`"))),
                    }
                }
            }
            Operand::Int(v) => Src::Imm(match ty {
                Ty::F32 => (*v as i64 as f32).to_bits() as u64,
                Ty::F64 => (*v as i64 as f64).to_bits(),
                _ => *v & ty.mask(),
            }),
            Operand::F32(b) => Src::Imm(match ty {
                Ty::F64 => (f32::from_bits(*b) as f64).to_bits(),
                _ => *b as u64,
            }),
            Operand::F64(f) => Src::Imm(match ty {
                Ty::F64 => f.to_bits(),
                Ty::F16 => half::f16::from_f64(*f).to_bits() as u64,
                Ty::Bf16 => half::bf16::from_f64(*f).to_bits() as u64,
                _ => (*f as f32).to_bits() as u64,
            }),
            _ => return Err(self.bad(format!("unexpected operand {o:?}"))),
        })
    }

    fn dst(&self, o: &Operand) -> Result<Option<u32>, EmuError> {
        match o {
            Operand::Sink => Ok(None),
            Operand::Name(n) => match self.reg(n) {
                Some((slot, _)) => Ok(Some(slot)),
                None => Err(self.bad(format!("`{n}` is not a declared register"))),
            },
            _ => Err(self.bad(format!("expected a destination register, found {o:?}"))),
        }
    }

    fn dreg(&self, o: &Operand) -> Result<u32, EmuError> {
        self.dst(o)?
            .ok_or_else(|| self.bad("`_` is not allowed here".into()))
    }

    fn reg_bits(&self, o: &Operand) -> u32 {
        match o {
            Operand::Name(n) => self.reg(n).map(|(_, t)| t.bits()).unwrap_or(64),
            _ => 64,
        }
    }

    /// An address operand; a symbol base implies its state space.
    fn addr(&self, o: &Operand) -> Result<(Addr, Option<MemSpace>), EmuError> {
        let Operand::Address { base, offset } = o else {
            return Err(self.bad(format!("expected an address `[...]`, found {o:?}")));
        };
        let Some(b) = base else {
            return Ok((
                Addr {
                    base: None,
                    offset: *offset,
                },
                None,
            ));
        };
        if let Some((slot, _)) = self.reg(b) {
            return Ok((
                Addr {
                    base: Some(slot),
                    offset: *offset,
                },
                None,
            ));
        }
        let (off, space) = match self.symbols.get(b) {
            Some(Symbol::Global(a)) => (*a as i64, MemSpace::Global),
            Some(Symbol::Shared(o)) => (*o as i64, MemSpace::Shared),
            Some(Symbol::Local(o)) => (*o as i64, MemSpace::Local),
            Some(Symbol::Param(o)) => (*o as i64, MemSpace::Param),
            None => return Err(self.bad(format!("unknown register or symbol `{b}` in address"))),
        };
        Ok((
            Addr {
                base: None,
                offset: off + offset,
            },
            Some(space),
        ))
    }

    fn vec_dsts(&self, o: &Operand) -> Result<Vec<Option<u32>>, EmuError> {
        match o {
            Operand::Vector(v) => v.iter().map(|x| self.dst(x)).collect(),
            _ => Ok(vec![self.dst(o)?]),
        }
    }

    fn vec_srcs(&self, o: &Operand, ty: Ty) -> Result<Vec<Src>, EmuError> {
        match o {
            Operand::Vector(v) => v.iter().map(|x| self.src(x, ty)).collect(),
            _ => Ok(vec![self.src(o, ty)?]),
        }
    }

    fn nops(&self, ops: &[Operand], n: usize, opcode: &str) -> Result<(), EmuError> {
        if ops.len() != n {
            return Err(self.bad(format!(
                "`{opcode}` takes {n} operands, found {}",
                ops.len()
            )));
        }
        Ok(())
    }

    fn inst(&mut self, i: &ast::Inst) -> Result<Instr, EmuError> {
        self.line = i.line;
        self.col = i.col;
        let guard = match &i.guard {
            None => None,
            Some((name, neg)) => match self.reg(name) {
                Some((slot, _)) => Some((slot, *neg)),
                None => return Err(self.bad(format!("unknown guard predicate `{name}`"))),
            },
        };
        let op = self.op(&i.opcode, &i.operands)?;
        Ok(Instr {
            class: Class::of(&op),
            op,
            guard,
            line: i.line,
            col: i.col,
        })
    }

    fn alu(
        &self,
        op: AluOp,
        ty: Ty,
        flags: AluFlags,
        ops: &[Operand],
        n: usize,
        opcode: &str,
    ) -> Result<Op, EmuError> {
        self.nops(ops, n + 1, opcode)?;
        let d = self.dreg(&ops[0])?;
        let mut s = [Src::Imm(0); 4];
        for k in 0..n {
            // Shift amounts and bit-field positions are u32 whatever the operation type.
            let sty = match (op, k) {
                (AluOp::Shl | AluOp::Shr, 1) | (AluOp::Bfe, 1 | 2) | (AluOp::Bfi, 2 | 3) => Ty::U32,
                (AluOp::MulWide | AluOp::MadWide, 2) => widen(ty),
                _ => ty,
            };
            s[k] = self.src(&ops[k + 1], sty)?;
        }
        Ok(Op::Alu {
            op,
            ty,
            flags,
            d,
            s,
        })
    }

    fn op(&mut self, opcode: &str, ops: &[Operand]) -> Result<Op, EmuError> {
        let mut m = Mods::new(opcode);
        let name = m.name;
        let mut flags = AluFlags {
            rnd: Rnd::Default,
            ftz: false,
            sat: false,
            nan: false,
            approx: false,
        };
        let need_ty = |m: &mut Mods, s: &Self| {
            m.ty()
                .ok_or_else(|| s.bad(format!("`{opcode}` needs a type")))
        };
        let op = match name {
            "add" | "sub" | "mul" | "mad" | "fma" | "div" | "rem" | "min" | "max" | "neg"
            | "abs" | "and" | "or" | "xor" | "not" | "cnot" | "shl" | "shr" | "popc" | "clz"
            | "brev" | "bfe" | "bfi" | "rcp" | "sqrt" | "rsqrt" | "ex2" | "lg2" | "sin" | "cos"
            | "tanh" | "copysign" | "mul24" | "mad24" | "lop3" | "prmt" | "shf" => {
                flags.rnd = m.rnd();
                flags.ftz = m.take("ftz");
                flags.sat = m.take("sat");
                flags.nan = m.take("NaN");
                flags.approx = m.take("approx") | m.take("full");
                if m.take("cc") || name == "addc" {
                    return Err(self.unsupported(format!("carry flags in `{opcode}`")));
                }
                if m.take("xorsign") {
                    return Err(self.unsupported(format!("`.xorsign` in `{opcode}`")));
                }
                let hi = m.take("hi");
                let lo = m.take("lo");
                let wide = m.take("wide");
                let mut prmt = PrmtMode::Default;
                if name == "prmt" {
                    prmt = m
                        .take_mode(&[
                            ("f4e", PrmtMode::F4e),
                            ("b4e", PrmtMode::B4e),
                            ("rc8", PrmtMode::Rc8),
                            ("ecl", PrmtMode::Ecl),
                            ("ecr", PrmtMode::Ecr),
                            ("rc16", PrmtMode::Rc16),
                        ])
                        .unwrap_or(PrmtMode::Default);
                }
                let mut shf = (false, false);
                if name == "shf" {
                    shf.0 = m.take("l");
                    m.take("r");
                    shf.1 = m.take("clamp");
                    m.take("wrap");
                }
                let ty = need_ty(&mut m, self)?;
                if ty.size() > 8 {
                    return Err(self.unsupported(format!("`{opcode}`: 128-bit operands")));
                }
                let (op, n) = match name {
                    "add" => (AluOp::Add, 2),
                    "sub" => (AluOp::Sub, 2),
                    "mul" if hi => (AluOp::MulHi, 2),
                    "mul" if wide => (AluOp::MulWide, 2),
                    "mul" => (AluOp::MulLo, 2),
                    "mul24" if hi => (AluOp::Mul24Hi, 2),
                    "mul24" => (AluOp::Mul24Lo, 2),
                    "mad24" if hi => return Err(self.unsupported("mad24.hi".into())),
                    "mad24" => (AluOp::Mad24Lo, 3),
                    "mad" if hi => (AluOp::MadHi, 3),
                    "mad" if wide => (AluOp::MadWide, 3),
                    "mad" if ty.is_float() || ty == Ty::F16x2 || ty == Ty::Bf16x2 => {
                        (AluOp::Fma, 3)
                    }
                    "mad" => (AluOp::MadLo, 3),
                    "fma" => (AluOp::Fma, 3),
                    "div" => (AluOp::Div, 2),
                    "rem" => (AluOp::Rem, 2),
                    "min" => (AluOp::Min, 2),
                    "max" => (AluOp::Max, 2),
                    "neg" => (AluOp::Neg, 1),
                    "abs" => (AluOp::Abs, 1),
                    "and" => (AluOp::And, 2),
                    "or" => (AluOp::Or, 2),
                    "xor" => (AluOp::Xor, 2),
                    "not" => (AluOp::Not, 1),
                    "cnot" => (AluOp::Cnot, 1),
                    "shl" => (AluOp::Shl, 2),
                    "shr" => (AluOp::Shr, 2),
                    "popc" => (AluOp::Popc, 1),
                    "clz" => (AluOp::Clz, 1),
                    "brev" => (AluOp::Brev, 1),
                    "bfe" => (AluOp::Bfe, 3),
                    "bfi" => (AluOp::Bfi, 4),
                    "rcp" => (AluOp::Rcp, 1),
                    "sqrt" => (AluOp::Sqrt, 1),
                    "rsqrt" => (AluOp::Rsqrt, 1),
                    "ex2" => (AluOp::Ex2, 1),
                    "lg2" => (AluOp::Lg2, 1),
                    "sin" => (AluOp::Sin, 1),
                    "cos" => (AluOp::Cos, 1),
                    "tanh" => (AluOp::Tanh, 1),
                    "copysign" => (AluOp::Copysign, 2),
                    "lop3" => (AluOp::Lop3, 4),
                    "prmt" => (AluOp::Prmt(prmt), 3),
                    _ => (
                        AluOp::Shf {
                            left: shf.0,
                            clamp: shf.1,
                        },
                        3,
                    ),
                };
                if lo
                    && !matches!(
                        op,
                        AluOp::MulLo | AluOp::MadLo | AluOp::Mul24Lo | AluOp::Mad24Lo
                    )
                {
                    return Err(self.bad(format!("`.lo` on `{opcode}`")));
                }
                if name == "lop3" && ops.len() != 5 {
                    return Err(self.unsupported("lop3 with a predicate output".into()));
                }
                let o = self.alu(op, ty, flags, ops, n, opcode)?;
                self.finish(&m, opcode)?;
                return Ok(o);
            }
            "mov" => {
                let ty = need_ty(&mut m, self)?;
                if ty.size() > 8 {
                    return Err(self.unsupported(format!("`{opcode}`: 128-bit operands")));
                }
                self.finish(&m, opcode)?;
                self.nops(ops, 2, opcode)?;
                match (&ops[0], &ops[1]) {
                    (Operand::Vector(v), a) => Op::Unpack {
                        ds: self.vec_dsts(&ops[0])?,
                        a: self.src(a, ty)?,
                        part_bits: ty.bits() / v.len() as u32,
                    },
                    (d, Operand::Vector(v)) => Op::Pack {
                        d: self.dreg(d)?,
                        parts: self.vec_srcs(&ops[1], Ty::B64)?,
                        part_bits: ty.bits() / v.len() as u32,
                    },
                    _ => self.alu(AluOp::Mov, ty, flags, ops, 1, opcode)?,
                }
            }
            "createpolicy" => {
                m.list.clear();
                let d = self.dreg(
                    ops.first()
                        .ok_or_else(|| self.bad("createpolicy needs a destination".into()))?,
                )?;
                Op::Alu {
                    op: AluOp::Mov,
                    ty: Ty::B64,
                    flags,
                    d,
                    s: [Src::Imm(0); 4],
                }
            }
            "activemask" => {
                need_ty(&mut m, self)?;
                self.finish(&m, opcode)?;
                self.nops(ops, 1, opcode)?;
                Op::ActiveMask {
                    d: self.dreg(&ops[0])?,
                }
            }
            "setp" | "set" => {
                let cmp = m
                    .take_mode(&[
                        ("eq", Cmp::Eq),
                        ("ne", Cmp::Ne),
                        ("lt", Cmp::Lt),
                        ("le", Cmp::Le),
                        ("gt", Cmp::Gt),
                        ("ge", Cmp::Ge),
                        ("lo", Cmp::Lo),
                        ("ls", Cmp::Ls),
                        ("hi", Cmp::Hi),
                        ("hs", Cmp::Hs),
                        ("equ", Cmp::Equ),
                        ("neu", Cmp::Neu),
                        ("ltu", Cmp::Ltu),
                        ("leu", Cmp::Leu),
                        ("gtu", Cmp::Gtu),
                        ("geu", Cmp::Geu),
                        ("num", Cmp::Num),
                        ("nan", Cmp::Nan),
                    ])
                    .ok_or_else(|| self.bad(format!("`{opcode}` needs a comparison")))?;
                let bop = m.take_mode(&[
                    ("and", BoolOp::And),
                    ("or", BoolOp::Or),
                    ("xor", BoolOp::Xor),
                ]);
                let ftz = m.take("ftz");
                if name == "set" {
                    let dty = need_ty(&mut m, self)?;
                    let sty = need_ty(&mut m, self)?;
                    self.finish(&m, opcode)?;
                    if bop.is_some() {
                        return Err(self.unsupported("set with a boolean combination".into()));
                    }
                    self.nops(ops, 3, opcode)?;
                    Op::Set {
                        cmp,
                        ftz,
                        dty,
                        sty,
                        d: self.dreg(&ops[0])?,
                        a: self.src(&ops[1], sty)?,
                        b: self.src(&ops[2], sty)?,
                    }
                } else {
                    let ty = need_ty(&mut m, self)?;
                    self.finish(&m, opcode)?;
                    if matches!(ty, Ty::F16x2 | Ty::Bf16x2) {
                        return Err(self.unsupported(format!("packed comparison `{opcode}`")));
                    }
                    let (p, q) = match &ops.first() {
                        Some(Operand::Pair(p, q)) => (
                            self.dst(&Operand::Name(p.clone()))?,
                            self.dst(&Operand::Name(q.clone()))?,
                        ),
                        Some(o) => (self.dst(o)?, None),
                        None => return Err(self.bad("setp needs operands".into())),
                    };
                    let comb = match bop {
                        None => {
                            self.nops(ops, 3, opcode)?;
                            None
                        }
                        Some(b) => {
                            self.nops(ops, 4, opcode)?;
                            Some(match &ops[3] {
                                Operand::Not(n) => {
                                    (b, self.src(&Operand::Name(n.clone()), Ty::Pred)?, true)
                                }
                                o => (b, self.src(o, Ty::Pred)?, false),
                            })
                        }
                    };
                    Op::Setp {
                        cmp,
                        ftz,
                        ty,
                        p,
                        q,
                        a: self.src(&ops[1], ty)?,
                        b: self.src(&ops[2], ty)?,
                        comb,
                    }
                }
            }
            "selp" => {
                let ty = need_ty(&mut m, self)?;
                self.finish(&m, opcode)?;
                self.nops(ops, 4, opcode)?;
                Op::Selp {
                    ty,
                    d: self.dreg(&ops[0])?,
                    a: self.src(&ops[1], ty)?,
                    b: self.src(&ops[2], ty)?,
                    c: self.src(&ops[3], Ty::Pred)?,
                }
            }
            "cvt" => {
                let rnd = m.rnd();
                let sat = m.take("sat");
                let ftz = m.take("ftz");
                let relu = m.take("relu");
                let dty = need_ty(&mut m, self)?;
                let sty = need_ty(&mut m, self)?;
                self.finish(&m, opcode)?;
                if dty.size() > 8 || sty.size() > 8 {
                    return Err(self.unsupported(format!("`{opcode}`: 128-bit conversion")));
                }
                if matches!(dty, Ty::F16x2 | Ty::Bf16x2) {
                    self.nops(ops, 3, opcode)?;
                    Op::CvtPack {
                        dty,
                        relu,
                        d: self.dreg(&ops[0])?,
                        a: self.src(&ops[1], sty)?,
                        b: self.src(&ops[2], sty)?,
                    }
                } else {
                    self.nops(ops, 2, opcode)?;
                    if matches!(sty, Ty::F16x2 | Ty::Bf16x2) || dty == Ty::Pred || sty == Ty::Pred {
                        return Err(self.unsupported(format!("conversion `{opcode}`")));
                    }
                    Op::Cvt {
                        dty,
                        sty,
                        rnd,
                        sat,
                        ftz,
                        relu,
                        d: self.dreg(&ops[0])?,
                        a: self.src(&ops[1], sty)?,
                    }
                }
            }
            "cvta" => {
                let to = m.take("to");
                let space = m
                    .space()
                    .ok_or_else(|| self.bad("cvta needs a state space".into()))?;
                need_ty(&mut m, self)?;
                self.finish(&m, opcode)?;
                self.nops(ops, 2, opcode)?;
                Op::Cvta {
                    to,
                    space,
                    d: self.dreg(&ops[0])?,
                    a: self.src(&ops[1], Ty::U64)?,
                }
            }
            "ld" | "ldu" | "st" => {
                let space0 = m.space();
                let n = m.vector();
                let ty = need_ty(&mut m, self)?;
                if ty.size() > 8 {
                    return Err(self.unsupported(format!("`{opcode}`: 128-bit elements")));
                }
                self.finish(&m, opcode)?;
                if ops.len() != 2 && ops.len() != 3 {
                    return Err(
                        self.bad(format!("`{opcode}` takes 2 operands (and a cache policy)"))
                    );
                }
                // `ld d, [a]` and `st [a], s`.
                let store = name == "st";
                let (data, addr) = if store {
                    (&ops[1], &ops[0])
                } else {
                    (&ops[0], &ops[1])
                };
                let (addr, sym_space) = self.addr(addr)?;
                let space = space0.or(sym_space).unwrap_or(MemSpace::Generic);
                if store {
                    let srcs = self.vec_srcs(data, ty)?;
                    if srcs.len() != n {
                        return Err(self.bad(format!("`{opcode}` needs {n} source values")));
                    }
                    Op::St {
                        space,
                        ty,
                        srcs,
                        addr,
                    }
                } else {
                    let ds = self.vec_dsts(data)?;
                    if ds.len() != n {
                        return Err(self.bad(format!("`{opcode}` needs {n} destination registers")));
                    }
                    let reg_bits = match data {
                        Operand::Vector(v) => v.first().map(|o| self.reg_bits(o)).unwrap_or(64),
                        o => self.reg_bits(o),
                    };
                    Op::Ld {
                        space,
                        ty,
                        ds,
                        addr,
                        reg_bits,
                    }
                }
            }
            "atom" | "red" => {
                let space0 = m.space();
                let aop = m
                    .take_mode(ATOM_OPS)
                    .ok_or_else(|| self.unsupported(format!("atomic operation in `{opcode}`")))?;
                m.take("noftz");
                let n = m.vector();
                let ty = need_ty(&mut m, self)?;
                self.finish(&m, opcode)?;
                if n > 1 && !(aop == AtomOp::Add && ty.is_float()) {
                    return Err(self.unsupported(format!("vector atomic `{opcode}`")));
                }
                // 16-bit atomics: f16/bf16 add and b16 cas/exch (sm_70+ / sm_90).
                let ok16 = match ty {
                    Ty::F16 | Ty::Bf16 => aop == AtomOp::Add,
                    Ty::B16 | Ty::U16 => matches!(aop, AtomOp::Cas | AtomOp::Exch),
                    _ => false,
                };
                if !matches!(ty.size(), 4 | 8) && !ok16 {
                    return Err(self.unsupported(format!("atomic `{opcode}`")));
                }
                let (d, rest) = if name == "atom" {
                    let first = ops
                        .first()
                        .ok_or_else(|| self.bad(format!("`{opcode}` needs a destination")))?;
                    let d = match first {
                        Operand::Vector(v) => v
                            .iter()
                            .map(|x| self.dreg(x))
                            .collect::<Result<Vec<_>, _>>()?,
                        one => vec![self.dreg(one)?],
                    };
                    if d.len() != n {
                        return Err(self.bad(format!("`{opcode}` needs {n} destinations")));
                    }
                    (d, &ops[1..])
                } else {
                    (Vec::new(), ops)
                };
                let need = if aop == AtomOp::Cas { 3 } else { 2 };
                if rest.len() < need {
                    return Err(self.bad(format!(
                        "`{opcode}` needs {need} operands after the destination"
                    )));
                }
                let (addr, sym_space) = self.addr(&rest[0])?;
                Op::Atom {
                    space: space0.or(sym_space).unwrap_or(MemSpace::Generic),
                    op: aop,
                    ty,
                    d,
                    addr,
                    b: {
                        let b = self.vec_srcs(&rest[1], ty)?;
                        if b.len() != n {
                            return Err(self.bad(format!("`{opcode}` needs {n} source values")));
                        }
                        b
                    },
                    c: if aop == AtomOp::Cas {
                        self.src(&rest[2], ty)?
                    } else {
                        Src::Imm(0)
                    },
                }
            }
            "bra" | "brx" => {
                if name == "brx" {
                    return Err(self.unsupported("brx.idx".into()));
                }
                self.finish(&m, opcode)?;
                self.nops(ops, 1, opcode)?;
                match &ops[0] {
                    Operand::Name(l) => match self.label(l) {
                        Some(t) => Op::Bra { target: t },
                        None => return Err(self.bad(format!("unknown label `{l}`"))),
                    },
                    o => return Err(self.bad(format!("expected a label, found {o:?}"))),
                }
            }
            "ret" | "exit" => {
                self.finish(&m, opcode)?;
                Op::Exit
            }
            "bar" | "barrier" => {
                if m.take("warp") {
                    self.finish(&m, opcode)?;
                    self.nops(ops, 1, opcode)?;
                    Op::WarpSync {
                        mask: self.src(&ops[0], Ty::B32)?,
                    }
                } else {
                    let arrive = m.take("arrive");
                    if m.take("red") {
                        return Err(self.unsupported("bar.red".into()));
                    }
                    self.finish(&m, opcode)?;
                    if ops.is_empty() || ops.len() > 2 {
                        return Err(self.bad(format!(
                            "`{opcode}` takes a barrier id and an optional count"
                        )));
                    }
                    Op::Bar {
                        id: self.src(&ops[0], Ty::U32)?,
                        count: match ops.get(1) {
                            Some(o) => Some(self.src(o, Ty::U32)?),
                            None => None,
                        },
                        arrive,
                    }
                }
            }
            "mbarrier" | "tensormap" | "elect" | "setmaxnreg" => {
                return self.async_op(m, opcode, ops);
            }
            "membar" | "fence" | "prefetch" | "prefetchu" | "nanosleep" | "griddepcontrol"
            | "discard" | "applypriority" | "pmevent" => Op::Nop,
            "shfl" => {
                let mode = self.sync_mode(
                    &mut m,
                    opcode,
                    &[
                        ("up", ShflMode::Up),
                        ("down", ShflMode::Down),
                        ("bfly", ShflMode::Bfly),
                        ("idx", ShflMode::Idx),
                    ],
                )?;
                self.nops(ops, 5, opcode)?;
                let (d, p) = match &ops[0] {
                    Operand::Pair(d, p) => (
                        self.dreg(&Operand::Name(d.clone()))?,
                        self.dst(&Operand::Name(p.clone()))?,
                    ),
                    o => (self.dreg(o)?, None),
                };
                Op::Shfl {
                    mode,
                    d,
                    p,
                    a: self.src(&ops[1], Ty::B32)?,
                    b: self.src(&ops[2], Ty::B32)?,
                    c: self.src(&ops[3], Ty::B32)?,
                    mask: self.src(&ops[4], Ty::B32)?,
                }
            }
            "vote" => {
                let mode = self.sync_mode(
                    &mut m,
                    opcode,
                    &[
                        ("all", VoteMode::All),
                        ("any", VoteMode::Any),
                        ("uni", VoteMode::Uni),
                        ("ballot", VoteMode::Ballot),
                    ],
                )?;
                self.nops(ops, 3, opcode)?;
                let (a, negate) = match &ops[1] {
                    Operand::Not(n) => (self.src(&Operand::Name(n.clone()), Ty::Pred)?, true),
                    o => (self.src(o, Ty::Pred)?, false),
                };
                Op::Vote {
                    mode,
                    d: self.dreg(&ops[0])?,
                    a,
                    negate,
                    mask: self.src(&ops[2], Ty::B32)?,
                }
            }
            "redux" => {
                // redux has the atomic operations that combine values, not exch/cas/inc/dec.
                let aop = m
                    .take_mode(ATOM_OPS)
                    .filter(|op| {
                        use AtomOp::*;
                        matches!(op, Add | Min | Max | And | Or | Xor)
                    })
                    .ok_or_else(|| self.unsupported(format!("`{opcode}`")))?;
                let ty = need_ty(&mut m, self)?;
                self.finish(&m, opcode)?;
                if ty.size() != 4 || ty.is_float() {
                    return Err(self.unsupported(format!("redux type .{ty}")));
                }
                self.nops(ops, 3, opcode)?;
                Op::Redux {
                    op: aop,
                    ty,
                    d: self.dreg(&ops[0])?,
                    a: self.src(&ops[1], ty)?,
                    mask: self.src(&ops[2], Ty::B32)?,
                }
            }
            "ldmatrix" | "stmatrix" => {
                if !m.take("m8n8") {
                    return Err(self.unsupported(format!("`{opcode}` shape")));
                }
                let n = m
                    .take_mode(&[("x1", 1), ("x2", 2), ("x4", 4)])
                    .ok_or_else(|| self.bad(format!("`{opcode}` needs .x1, .x2 or .x4")))?;
                let trans = m.take("trans");
                let space = m.space().unwrap_or(MemSpace::Generic);
                if need_ty(&mut m, self)? != Ty::B16 {
                    return Err(self.unsupported(format!("`{opcode}` element type")));
                }
                self.finish(&m, opcode)?;
                self.nops(ops, 2, opcode)?;
                if name == "ldmatrix" {
                    let ds = self.vec_dsts(&ops[0])?;
                    if ds.len() != n || ds.iter().any(|d| d.is_none()) {
                        return Err(self.bad(format!("`{opcode}` needs {n} destination registers")));
                    }
                    Op::Ldmatrix {
                        ds: ds.into_iter().flatten().collect(),
                        trans,
                        addr: self.addr(&ops[1])?.0,
                        space,
                    }
                } else {
                    let srcs = self.vec_srcs(&ops[1], Ty::B32)?;
                    if srcs.len() != n {
                        return Err(self.bad(format!("`{opcode}` needs {n} source registers")));
                    }
                    Op::Stmatrix {
                        srcs,
                        trans,
                        addr: self.addr(&ops[0])?.0,
                        space,
                    }
                }
            }
            "mma" => {
                if !m.take("sync") || !m.take("aligned") {
                    return Err(self.unsupported(format!("`{opcode}` without .sync.aligned")));
                }
                let shape = m
                    .take_any(&["m16n8k16", "m16n8k8", "m16n8k4"])
                    .ok_or_else(|| self.unsupported(format!("mma shape in `{opcode}`")))?;
                if !m.take("row") || !m.take("col") {
                    return Err(
                        self.unsupported(format!("mma layout in `{opcode}` (only .row.col)"))
                    );
                }
                let dty = need_ty(&mut m, self)?;
                let aty = need_ty(&mut m, self)?;
                let bty = need_ty(&mut m, self)?;
                let cty = need_ty(&mut m, self)?;
                self.finish(&m, opcode)?;
                if aty != bty || dty != cty {
                    return Err(self.unsupported(format!("mixed mma types in `{opcode}`")));
                }
                let kind = match (shape, aty, cty) {
                    ("m16n8k16", Ty::F16 | Ty::Bf16, Ty::F32) => {
                        MmaKind::M16n8k16 { ab: aty, cd: cty }
                    }
                    ("m16n8k16", Ty::F16, Ty::F16) => MmaKind::M16n8k16 { ab: aty, cd: cty },
                    ("m16n8k8", Ty::F16 | Ty::Bf16, Ty::F32) => {
                        MmaKind::M16n8k8 { ab: aty, cd: cty }
                    }
                    ("m16n8k8", Ty::F16, Ty::F16) => MmaKind::M16n8k8 { ab: aty, cd: cty },
                    ("m16n8k8", Ty::Tf32, Ty::F32) => MmaKind::M16n8k8Tf32,
                    ("m16n8k4", Ty::Tf32, Ty::F32) => MmaKind::M16n8k4Tf32,
                    _ => return Err(self.unsupported(format!("mma variant `{opcode}`"))),
                };
                let (na, nb, nc) = match kind {
                    MmaKind::M16n8k16 { cd, .. } => (4, 2, if cd == Ty::F32 { 4 } else { 2 }),
                    MmaKind::M16n8k8 { cd, .. } => (2, 1, if cd == Ty::F32 { 4 } else { 2 }),
                    MmaKind::M16n8k8Tf32 => (4, 2, 4),
                    MmaKind::M16n8k4Tf32 => (2, 1, 4),
                };
                self.nops(ops, 4, opcode)?;
                let d: Vec<u32> = self.vec_dsts(&ops[0])?.into_iter().flatten().collect();
                let a = self.vec_srcs(&ops[1], Ty::B32)?;
                let b = self.vec_srcs(&ops[2], Ty::B32)?;
                let c = self.vec_srcs(&ops[3], Ty::F32)?;
                if d.len() != nc || a.len() != na || b.len() != nb || c.len() != nc {
                    return Err(self.bad(format!(
                        "`{opcode}` needs {nc} D, {na} A, {nb} B and {nc} C registers"
                    )));
                }
                Op::Mma { kind, d, a, b, c }
            }
            "cp" => {
                if !m.take("async") {
                    return Err(self.unsupported(format!("`{opcode}`")));
                }
                if m.take("bulk") {
                    return self.bulk_copy(m, opcode, ops);
                }
                if m.take("commit_group") {
                    self.finish(&m, opcode)?;
                    Op::CpAsyncCommit
                } else if m.take("wait_group") {
                    self.finish(&m, opcode)?;
                    self.nops(ops, 1, opcode)?;
                    match ops[0] {
                        Operand::Int(n) => Op::CpAsyncWait {
                            n: n as u32,
                            all: false,
                        },
                        _ => return Err(self.bad("cp.async.wait_group needs an integer".into())),
                    }
                } else if m.take("wait_all") {
                    self.finish(&m, opcode)?;
                    Op::CpAsyncWait { n: 0, all: true }
                } else {
                    if m.take("mbarrier") {
                        return Err(self.unsupported(format!("`{opcode}`")));
                    }
                    if !m.take("shared") && !m.take("shared::cta") {
                        return Err(self.unsupported(format!("`{opcode}` destination space")));
                    }
                    if !m.take("global") {
                        return Err(self.unsupported(format!("`{opcode}` source space")));
                    }
                    m.take("L2::cache_hint");
                    self.finish(&m, opcode)?;
                    if ops.len() < 3 {
                        return Err(self.bad(format!("`{opcode}` needs dst, src and size")));
                    }
                    let size = match ops[2] {
                        Operand::Int(s @ (4 | 8 | 16)) => s as u32,
                        _ => return Err(self.bad("cp.async size must be 4, 8 or 16".into())),
                    };
                    let mut src_size = None;
                    let mut ignore_src = None;
                    if let Some(o) = ops.get(3) {
                        match o {
                            Operand::Not(p) => {
                                ignore_src =
                                    Some((self.src(&Operand::Name(p.clone()), Ty::Pred)?, true))
                            }
                            Operand::Name(n) if self.reg(n).map(|r| r.1) == Some(Ty::Pred) => {
                                ignore_src = Some((self.src(o, Ty::Pred)?, false))
                            }
                            o => src_size = Some(self.src(o, Ty::U32)?),
                        }
                    }
                    Op::CpAsync {
                        dst: self.addr(&ops[0])?.0,
                        src: self.addr(&ops[1])?.0,
                        size,
                        src_size,
                        ignore_src,
                    }
                }
            }
            "wgmma" => self.wgmma(&mut m, opcode, ops)?,
            "trap" | "brkpt" => return Err(self.unsupported(format!("`{opcode}`"))),
            _ => return Err(self.unsupported(format!("instruction `{opcode}`"))),
        };
        Ok(op)
    }
}

/// The type of twice the width (for `.wide` results).
pub fn widen(ty: Ty) -> Ty {
    match ty {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        t => t,
    }
}

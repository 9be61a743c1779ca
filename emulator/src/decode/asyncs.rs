//! Decoding of Hopper's asynchronous-copy instructions into [`AsyncOp`]: `mbarrier`,
//! `cp.async.bulk(.tensor)`, `tensormap.replace` / `cp_fenceproxy`, `elect.sync`, and the
//! checks of `setmaxnreg`.

use super::{Decoder, Mods};
use crate::ast::Operand;
use crate::error::EmuError;
use crate::ir::{Addr, MemSpace, Op, Src, Ty};
use crate::tma::{AsyncOp, MbarOp, TmapField};

const TMAP_FIELDS: &[(&str, TmapField)] = &[
    ("global_address", TmapField::GlobalAddress),
    ("rank", TmapField::Rank),
    ("box_dim", TmapField::BoxDim),
    ("global_dim", TmapField::GlobalDim),
    ("global_stride", TmapField::GlobalStride),
    ("element_stride", TmapField::ElementStride),
    ("elemtype", TmapField::ElemType),
    ("interleave_layout", TmapField::Interleave),
    ("swizzle_mode", TmapField::Swizzle),
    ("fill_mode", TmapField::Fill),
];

impl Decoder<'_> {
    /// `mbarrier.*`, `tensormap.*`, `elect.sync` and `setmaxnreg` (an [`Op::Nop`] once
    /// its register count is checked).
    pub(super) fn async_op(
        &mut self,
        mut m: Mods,
        opcode: &str,
        ops: &[Operand],
    ) -> Result<Op, EmuError> {
        let a = match m.name {
            "mbarrier" => self.mbarrier(&mut m, opcode, ops)?,
            "tensormap" => self.tensormap(&mut m, opcode, ops)?,
            "elect" => {
                if !m.take("sync") {
                    return Err(self.unsupported(format!("`{opcode}` without .sync")));
                }
                self.finish(&m, opcode)?;
                self.nops(ops, 2, opcode)?;
                let (d, p) = match &ops[0] {
                    Operand::Pair(d, p) => (self.sink_or_reg(d)?, self.sink_or_reg(p)?),
                    o => (self.dst(o)?, None),
                };
                AsyncOp::Elect {
                    d,
                    p,
                    mask: self.src(&ops[1], Ty::B32)?,
                }
            }
            _ => {
                // setmaxnreg.{inc,dec}.sync.aligned.u32 count
                if m.take_any(&["inc", "dec"]).is_none() || !m.take("u32") {
                    return Err(self.unsupported(format!("`{opcode}`")));
                }
                self.finish(&m, opcode)?;
                self.nops(ops, 1, opcode)?;
                return match ops[0] {
                    Operand::Int(n) if n % 8 == 0 && (24..=256).contains(&n) => Ok(Op::Nop),
                    _ => Err(self.bad(format!(
                        "`{opcode}` needs a register count that is a multiple of 8 in 24..=256, found {:?}",
                        ops[0]
                    ))),
                };
            }
        };
        Ok(Op::Async(Box::new(a)))
    }

    /// `_` or a destination register named `name`.
    fn sink_or_reg(&self, name: &str) -> Result<Option<u32>, EmuError> {
        if name == "_" {
            return Ok(None);
        }
        self.dst(&Operand::Name(name.to_string()))
    }

    /// An address operand and the state space it is in: the instruction's, the
    /// symbol's, else generic.
    fn spaced_addr(
        &self,
        o: &Operand,
        space: Option<MemSpace>,
    ) -> Result<(Addr, MemSpace), EmuError> {
        let (a, sym) = self.addr(o)?;
        Ok((a, space.or(sym).unwrap_or(MemSpace::Generic)))
    }

    fn mbarrier(&self, m: &mut Mods, opcode: &str, ops: &[Operand]) -> Result<AsyncOp, EmuError> {
        let op = if m.take("init") {
            MbarOp::Init
        } else if m.take("inval") {
            MbarOp::Inval
        } else if m.take("arrive") {
            MbarOp::Arrive {
                expect_tx: m.take("expect_tx"),
                no_complete: m.take("noComplete"),
            }
        } else if m.take("expect_tx") {
            MbarOp::ExpectTx
        } else if m.take("complete_tx") {
            MbarOp::CompleteTx
        } else if let Some(w) = m.take_any(&["test_wait", "try_wait"]) {
            MbarOp::Wait {
                parity: m.take("parity"),
                try_: w == "try_wait",
            }
        } else {
            return Err(self.unsupported(format!("`{opcode}`")));
        };
        let space = m
            .take_any(&["shared", "shared::cta", "shared::cluster"])
            .map(|_| MemSpace::Shared);
        if !m.take("b64") {
            return Err(self.bad(format!("`{opcode}` needs .b64")));
        }
        self.finish(m, opcode)?;
        // Operand positions: (destination,) [address], (count or bytes or phase, hint).
        let (has_d, min, max) = match op {
            MbarOp::Init | MbarOp::ExpectTx | MbarOp::CompleteTx => (false, 2, 2),
            MbarOp::Inval => (false, 1, 1),
            MbarOp::Arrive {
                expect_tx: true, ..
            } => (true, 3, 3),
            MbarOp::Arrive { no_complete, .. } => (true, if no_complete { 3 } else { 2 }, 3),
            MbarOp::Wait { try_, .. } => (true, 3, if try_ { 4 } else { 3 }),
        };
        if ops.len() < min || ops.len() > max {
            return Err(self.bad(format!(
                "`{opcode}` takes {min} to {max} operands, found {}",
                ops.len()
            )));
        }
        let d = if has_d { self.dst(&ops[0])? } else { None };
        let first = usize::from(has_d);
        let (addr, space) = self.spaced_addr(&ops[first], space)?;
        let a = match ops.get(first + 1) {
            Some(o) => Some(self.src(o, Ty::B64)?),
            None => None,
        };
        Ok(AsyncOp::Mbar {
            op,
            space,
            addr,
            d,
            a,
        })
    }

    /// `cp.async.bulk...` after `cp.async.bulk`.
    pub(super) fn bulk_copy(
        &mut self,
        mut m: Mods,
        opcode: &str,
        ops: &[Operand],
    ) -> Result<Op, EmuError> {
        let m = &mut m;
        if m.take("commit_group") || m.take("wait_group") {
            m.take("read");
            self.finish(m, opcode)?;
            return Ok(Op::Async(Box::new(AsyncOp::BulkGroup)));
        }
        let rank = m.take_mode(&[("1d", 1), ("2d", 2), ("3d", 3), ("4d", 4), ("5d", 5)]);
        let tensor = m.take("tensor");
        if tensor != rank.is_some() {
            return Err(self.bad(format!(
                "`{opcode}`: .tensor needs a dimension (.1d to .5d)"
            )));
        }
        // The destination space, then the source space.
        let spaces: Vec<&str> = m
            .list
            .iter()
            .filter(|x| matches!(**x, "global" | "shared::cluster" | "shared::cta"))
            .copied()
            .collect();
        let store = match spaces[..] {
            ["shared::cluster" | "shared::cta", "global"] => false,
            ["global", "shared::cta"] => true,
            _ => {
                return Err(self.unsupported(format!(
                    "`{opcode}` (bulk copies are global -> shared with .mbarrier::complete_tx::bytes or shared::cta -> global with .bulk_group)"
                )));
            }
        };
        for s in spaces {
            m.take(s);
        }
        m.take("tile");
        let hint = m.take("L2::cache_hint");
        let completion = if store {
            "bulk_group"
        } else {
            "mbarrier::complete_tx::bytes"
        };
        if !m.take(completion) {
            return Err(self.unsupported(format!("`{opcode}` without .{completion}")));
        }
        self.finish(m, opcode)?;
        let n = match (tensor, store) {
            (true, true) => 2,
            (true, false) | (false, true) => 3,
            (false, false) => 4,
        } + usize::from(hint);
        self.nops(ops, n, opcode)?;
        let addr = |o: &Operand| -> Result<Addr, EmuError> { Ok(self.addr(o)?.0) };
        let a = match (tensor, store) {
            (false, false) => AsyncOp::BulkLoad {
                dst: addr(&ops[0])?,
                src: addr(&ops[1])?,
                size: self.src(&ops[2], Ty::U32)?,
                mbar: addr(&ops[3])?,
            },
            (false, true) => AsyncOp::BulkStore {
                dst: addr(&ops[0])?,
                src: addr(&ops[1])?,
                size: self.src(&ops[2], Ty::U32)?,
            },
            (true, _) => {
                let (t, smem) = if store { (0, 1) } else { (1, 0) };
                let Operand::Tensor { base, coords } = &ops[t] else {
                    return Err(self.bad(format!(
                        "`{opcode}` needs a `[tensorMap, {{coordinates}}]` operand"
                    )));
                };
                let rank = rank.unwrap_or(0);
                if coords.len() != rank {
                    return Err(self.bad(format!(
                        "`{opcode}` needs {rank} coordinates, found {}",
                        coords.len()
                    )));
                }
                let tm = Operand::Address {
                    base: Some(base.clone()),
                    offset: 0,
                };
                let (tmap, tmap_space) = self.spaced_addr(&tm, None)?;
                if tmap_space == MemSpace::Param {
                    // ptxas: "State space mismatch between instruction and address".
                    return Err(self.bad(format!(
                        "`{opcode}`: the tensor map operand is a generic address; take the parameter's with `cvta.param` (`{base}` is a .param symbol)"
                    )));
                }
                AsyncOp::Tensor {
                    smem: addr(&ops[smem])?,
                    tmap,
                    tmap_space,
                    coords: coords
                        .iter()
                        .map(|c| self.src(c, Ty::S32))
                        .collect::<Result<Vec<Src>, EmuError>>()?,
                    mbar: if store { None } else { Some(addr(&ops[2])?) },
                }
            }
        };
        Ok(Op::Async(Box::new(a)))
    }

    fn tensormap(&self, m: &mut Mods, opcode: &str, ops: &[Operand]) -> Result<AsyncOp, EmuError> {
        if m.take("cp_fenceproxy") {
            if !m.take("global") || !m.take("shared::cta") || !m.take("tensormap::generic") {
                return Err(self.unsupported(format!("`{opcode}`")));
            }
            self.finish(m, opcode)?;
            self.nops(ops, 3, opcode)?;
            if ops[2] != Operand::Int(128) {
                return Err(self.bad(format!("`{opcode}` copies 128 bytes")));
            }
            return Ok(AsyncOp::TmapCopy {
                dst: self.addr(&ops[0])?.0,
                src: self.addr(&ops[1])?.0,
            });
        }
        if !m.take("replace") || !m.take("tile") || !m.take("b1024") {
            return Err(self.unsupported(format!("`{opcode}`")));
        }
        let field = m
            .take_mode(TMAP_FIELDS)
            .ok_or_else(|| self.unsupported(format!("tensormap field in `{opcode}`")))?;
        let space = if m.take("global") {
            MemSpace::Global
        } else if m.take("shared::cta") {
            MemSpace::Shared
        } else {
            return Err(self.bad(format!("`{opcode}` needs .global or .shared::cta")));
        };
        let ty = m.take_any(&["b32", "b64"]);
        self.finish(m, opcode)?;
        let ordinal = matches!(
            field,
            TmapField::BoxDim
                | TmapField::GlobalDim
                | TmapField::GlobalStride
                | TmapField::ElementStride
        );
        self.nops(ops, 2 + usize::from(ordinal), opcode)?;
        let ord = if ordinal {
            match ops[1] {
                Operand::Int(o) if o < 5 => o as u32,
                _ => return Err(self.bad(format!("`{opcode}` needs an ordinal 0 to 4"))),
            }
        } else {
            0
        };
        let vty = if ty == Some("b64") { Ty::B64 } else { Ty::B32 };
        let value = &ops[ops.len() - 1];
        // The mode fields take an immediate code (as ptxas requires), in PTX 8.3's ranges.
        let codes = match field {
            TmapField::ElemType => Some(12),
            TmapField::Interleave => Some(2),
            TmapField::Swizzle => Some(3),
            TmapField::Fill => Some(1),
            _ => None,
        };
        let value = match (codes, value) {
            (None, v) => self.src(v, vty)?,
            (Some(max), Operand::Int(v)) if *v <= max => Src::Imm(*v),
            (Some(max), v) => {
                return Err(self.bad(format!(
                    "`{opcode}` needs an immediate code 0 to {max}, found {v:?}"
                )));
            }
        };
        Ok(AsyncOp::Replace {
            field,
            space,
            addr: self.addr(&ops[0])?.0,
            ord,
            value,
        })
    }
}

//! Decoding of the `wgmma` instructions (see [`crate::wgmma`]).

use super::{Decoder, Mods};
use crate::ast::Operand;
use crate::error::EmuError;
use crate::ir::{Op, Src, Ty};
use crate::wgmma::{AOperand, MmaAsync, WgOp};

impl Decoder<'_> {
    /// Decodes `wgmma.{fence,commit_group,wait_group,mma_async}.sync.aligned`.
    pub(super) fn wgmma(
        &self,
        m: &mut Mods,
        opcode: &str,
        ops: &[Operand],
    ) -> Result<Op, EmuError> {
        let what = m
            .take_any(&["fence", "commit_group", "wait_group", "mma_async"])
            .ok_or_else(|| self.unsupported(format!("instruction `{opcode}`")))?;
        if !m.take("sync") || !m.take("aligned") {
            return Err(self.unsupported(format!("`{opcode}` without .sync.aligned")));
        }
        let op = match what {
            "fence" => WgOp::Fence,
            "commit_group" => WgOp::Commit,
            "wait_group" => {
                self.nops(ops, 1, opcode)?;
                match ops[0] {
                    Operand::Int(n) if n < 1 << 16 => WgOp::Wait(n as u32),
                    _ => return Err(self.bad(format!("`{opcode}` needs an integer count"))),
                }
            }
            _ => WgOp::Mma(Box::new(self.mma_async(m, opcode, ops)?)),
        };
        self.finish(m, opcode)?;
        if what != "wait_group" && what != "mma_async" {
            self.nops(ops, 0, opcode)?;
        }
        Ok(Op::Wgmma(op))
    }

    fn mma_async(&self, m: &mut Mods, opcode: &str, ops: &[Operand]) -> Result<MmaAsync, EmuError> {
        let shape = m
            .list
            .iter()
            .position(|x| x.starts_with('m') && x.ends_with("k16"))
            .map(|i| m.list.remove(i))
            .ok_or_else(|| {
                self.unsupported(format!("wgmma shape in `{opcode}` (only m64nNk16)"))
            })?;
        let n = shape
            .strip_prefix("m64n")
            .and_then(|s| s.strip_suffix("k16"))
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|n| (8..=256).contains(n) && n % 8 == 0)
            .ok_or_else(|| self.unsupported(format!("wgmma shape .{shape} in `{opcode}`")))?;
        let types = [m.ty(), m.ty(), m.ty()];
        let ab = match types {
            [Some(Ty::F32), Some(a), Some(b)] if a == b && matches!(a, Ty::F16 | Ty::Bf16) => a,
            _ => {
                return Err(self.unsupported(format!(
                    "wgmma types in `{opcode}` (only .f32.f16.f16 and .f32.bf16.bf16)"
                )));
            }
        };
        let a_regs = matches!(ops.get(1), Some(Operand::Vector(_)));
        let nops = if a_regs { 7 } else { 8 };
        if ops.len() != nops {
            return Err(self.bad(format!(
                "`{opcode}` takes d, {}, b-desc, scale-d, imm-scale-a, imm-scale-b, {}imm-trans-b ({nops} operands), found {}",
                if a_regs { "{a0, a1, a2, a3}" } else { "a-desc" },
                if a_regs { "" } else { "imm-trans-a, " },
                ops.len()
            )));
        }
        let d: Vec<u32> = match &ops[0] {
            Operand::Vector(v) => v.iter().map(|o| self.dreg(o)).collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        if d.len() != n as usize / 2 {
            return Err(self.bad(format!(
                "`{opcode}` needs {} accumulator registers, found {}",
                n / 2,
                d.len()
            )));
        }
        let a = if a_regs {
            let v = self.vec_srcs(&ops[1], Ty::B32)?;
            let regs: [Src; 4] = v
                .try_into()
                .map_err(|_| self.bad(format!("`{opcode}` needs 4 A registers")))?;
            AOperand::Regs(regs)
        } else {
            AOperand::Desc(self.src(&ops[1], Ty::B64)?)
        };
        let scale_d = match &ops[3] {
            Operand::Not(p) => (self.src(&Operand::Name(p.clone()), Ty::Pred)?, true),
            o => (self.src(o, Ty::B32)?, false),
        };
        let imm = |o: &Operand, allowed: &[i64], name: &str| -> Result<i64, EmuError> {
            match o {
                Operand::Int(v) if allowed.contains(&(*v as i64)) => Ok(*v as i64),
                _ => Err(self.bad(format!(
                    "`{opcode}`: {name} must be one of {allowed:?}, found {o:?}"
                ))),
            }
        };
        let trans_a = if a_regs {
            false
        } else {
            imm(&ops[6], &[0, 1], "imm-trans-a")? == 1
        };
        Ok(MmaAsync {
            n,
            ab,
            d,
            a,
            b: self.src(&ops[2], Ty::B64)?,
            scale_d,
            neg_a: imm(&ops[4], &[1, -1], "imm-scale-a")? == -1,
            neg_b: imm(&ops[5], &[1, -1], "imm-scale-b")? == -1,
            trans_a,
            trans_b: imm(&ops[nops - 1], &[0, 1], "imm-trans-b")? == 1,
        })
    }
}

//! A static performance report of assembled kernels: assemble PTX with
//! `ptxas`, disassemble the cubin with `nvdisasm`, find each kernel's
//! steady-state loop and count the instructions that matter in it (tensor
//! core MMAs, shared-memory matrix loads, async copies, barriers, exp2,
//! shuffles, FP32 math). No GPU is needed; `jagc stats --sass` prints it.
//!
//! # The steady-state loop
//!
//! A loop is a backward branch (`BRA`/`JMP` to a label at or before it): its
//! body is every instruction from the label through the branch. Several
//! backward branches to one label are one loop (the farthest sets its end).
//! Two things that look like loops are not: a branch to itself (the `BRA`
//! trap ptxas puts after the last `EXIT`), and a branch from out-of-line
//! code back into the middle of a loop, which shows up as a range that
//! overlaps another without nesting (of two such ranges the one with the
//! later head is dropped).
//!
//! A loop's own instructions are those of its body outside any loop nested
//! in it. The steady-state loop is the one with the most own MMAs (`HMMA`,
//! `HGMMA`); ties go to the shorter body, then to the earlier one. An outer
//! loop around the MMA loop (a persistent loop over tiles) and a spin loop
//! inside it (an `mbarrier` wait) thus both leave the MMA loop chosen. With
//! no MMA anywhere, it is the innermost loop (no loop nested in it) with the
//! most instructions. The counts cover the whole body, nested loops
//! included, each instruction once: a static count per iteration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ptxas::{self, PtxasError};
use crate::spec::Arch;

/// Why a kernel's SASS could not be produced or analyzed.
#[derive(Debug, thiserror::Error)]
pub enum SassError {
    /// Assembling the PTX failed, or `ptxas` is missing.
    #[error(transparent)]
    Ptxas(#[from] PtxasError),
    /// No `nvdisasm` binary was found (see [`find_nvdisasm`]).
    #[error(
        "nvdisasm not found (set JAGGED_NVDISASM, or run scripts/install-tools.sh, \
         which installs ptxas and nvdisasm into .tools/bin)"
    )]
    NvdisasmNotFound,
    /// Reading or writing a cubin, or running `nvdisasm`, failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or binary involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `nvdisasm` rejected the cubin; `log` is its output.
    #[error("nvdisasm failed:\n{log}")]
    Rejected {
        /// Its stdout and stderr.
        log: String,
    },
    /// A line of the disassembly is not in the expected form.
    #[error("SASS line {line}: {why}: `{text}`")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A branch names a label the function does not define.
    #[error("{function}: the branch at {offset:#06x} targets unknown label `{label}`")]
    UnknownLabel {
        /// The function.
        function: String,
        /// Byte offset of the branch.
        offset: u32,
        /// The label.
        label: String,
    },
}

/// One SASS instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// Byte offset in its function.
    pub offset: u32,
    /// The guard predicate (`@P0`, `@!UP1`), if any.
    pub predicate: Option<String>,
    /// The opcode with its modifiers (`HMMA.16816.F32.BF16`).
    pub opcode: String,
    /// The operands as written, without the trailing `;`.
    pub operands: String,
    /// The label a branch or call names (`` `(.L_x_3) ``), if any.
    pub target: Option<String>,
}

impl Instruction {
    /// The opcode without modifiers (`HMMA`).
    pub fn mnemonic(&self) -> &str {
        self.opcode.split('.').next().unwrap_or_default()
    }

    /// Whether it is a direct jump (`BRA`, `JMP`, with any modifiers).
    pub fn is_jump(&self) -> bool {
        matches!(self.mnemonic(), "BRA" | "JMP")
    }
}

/// One function of a disassembly (a `.text.NAME` section).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Function {
    /// The section's symbol (the kernel's entry name).
    pub name: String,
    /// Its instructions, in address order.
    pub instructions: Vec<Instruction>,
    /// Labels (`.L_x_3`, internal subroutines) to byte offsets.
    pub labels: BTreeMap<String, u32>,
}

/// A loop of a [`Function`]: instruction indices `head..=back_edge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loop {
    /// Index of the first instruction (the branch target).
    pub head: usize,
    /// Index of the last backward branch to it.
    pub back_edge: usize,
}

impl Loop {
    /// Number of instructions in the body.
    pub fn body_len(&self) -> usize {
        self.back_edge + 1 - self.head
    }

    /// Whether `other` lies inside `self` and differs from it.
    fn contains(&self, other: &Loop) -> bool {
        self != other && self.head <= other.head && other.back_edge <= self.back_edge
    }

    /// Whether the ranges overlap without one holding the other.
    fn crosses(&self, other: &Loop) -> bool {
        let overlap = self.head <= other.back_edge && other.head <= self.back_edge;
        overlap && !self.contains(other) && !other.contains(self) && self != other
    }
}

/// Instruction counts of a range of SASS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every instruction.
    pub instructions: u32,
    /// `HMMA` (warp-level `mma.sync`).
    pub hmma: u32,
    /// `HGMMA` (warpgroup `wgmma`, sm_90).
    pub hgmma: u32,
    /// The `HGMMA`s' work in `HMMA.16816` units per warp: an
    /// `HGMMA.64xNxK` is a 16xNxK slice for each warp of the warpgroup, the
    /// work of N/8 * K/16 `HMMA.16816` (whole units, at least 1).
    pub hgmma_as_hmma: u32,
    /// `LDSM` (`ldmatrix`).
    pub ldsm: u32,
    /// `LDGSTS` (`cp.async`).
    pub ldgsts: u32,
    /// `UTMALDG` (TMA loads).
    pub utmaldg: u32,
    /// `BAR` (barriers: `bar.sync` and friends).
    pub bar: u32,
    /// `MUFU.EX2`.
    pub mufu_ex2: u32,
    /// `SHFL`.
    pub shfl: u32,
    /// `FFMA`.
    pub ffma: u32,
    /// `FMUL`.
    pub fmul: u32,
    /// `FADD`.
    pub fadd: u32,
}

impl Counts {
    /// The counts of `instructions`.
    pub fn of(instructions: &[Instruction]) -> Counts {
        let mut c = Counts::default();
        for i in instructions {
            c.instructions += 1;
            let slot = match i.mnemonic() {
                "HMMA" => &mut c.hmma,
                "HGMMA" => {
                    c.hgmma_as_hmma += hgmma_as_hmma(&i.opcode);
                    &mut c.hgmma
                }
                "LDSM" => &mut c.ldsm,
                "LDGSTS" => &mut c.ldgsts,
                "UTMALDG" => &mut c.utmaldg,
                "BAR" => &mut c.bar,
                "MUFU" if i.opcode == "MUFU.EX2" => &mut c.mufu_ex2,
                "SHFL" => &mut c.shfl,
                "FFMA" => &mut c.ffma,
                "FMUL" => &mut c.fmul,
                "FADD" => &mut c.fadd,
                _ => continue,
            };
            *slot += 1;
        }
        c
    }

    /// Instructions per `HMMA.16816` of work (`HMMA`s count 1 each, `HGMMA`s
    /// [`Counts::hgmma_as_hmma`]): the ratio that compares sm_80 and sm_90
    /// MMA loops (`None` without MMAs).
    pub fn per_hmma_work(&self) -> Option<f64> {
        let work = self.hmma + self.hgmma_as_hmma;
        (work > 0).then(|| f64::from(self.instructions) / f64::from(work))
    }

    /// MMA instructions: `HMMA` plus `HGMMA`.
    pub fn mma(&self) -> u32 {
        self.hmma + self.hgmma
    }

    /// Instructions per MMA instruction (`None` without MMAs). An `HGMMA`
    /// (a warpgroup's 64xNx16) does far more work than an `HMMA` (a warp's
    /// 16x8x16), so the ratio compares like with like only per kind.
    pub fn per_mma(&self) -> Option<f64> {
        (self.mma() > 0).then(|| f64::from(self.instructions) / f64::from(self.mma()))
    }
}

/// The work of one `HGMMA.64xNxK...` in `HMMA.16816` units per warp
/// ([`Counts::hgmma_as_hmma`]); 1 when the shape does not parse.
fn hgmma_as_hmma(opcode: &str) -> u32 {
    let shape = opcode.split('.').nth(1).unwrap_or_default();
    let dims: Vec<u32> = shape.split('x').filter_map(|d| d.parse().ok()).collect();
    match dims.as_slice() {
        [64, n, k] => (n / 8 * k / 16).max(1),
        _ => 1,
    }
}

/// The steady-state loop of one kernel and its counts.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopReport {
    /// The kernel.
    pub kernel: String,
    /// Instructions in the whole function.
    pub total_instructions: u32,
    /// Byte offsets of the loop's first and last instruction (`None`: the
    /// kernel has no loop).
    pub span: Option<(u32, u32)>,
    /// Counts over the loop body (zero without a loop).
    pub counts: Counts,
    /// The blocks of the body that forward jumps inside it skip, in branch
    /// order: what an iteration may not run (a last-tile mask, one of two
    /// alternative copies), to subtract from the static count by hand.
    pub skips: Vec<Skip>,
}

/// A block of a loop body that a forward jump inside the body skips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// Byte offset of the jump.
    pub branch: u32,
    /// Its guard predicate (`None`: it always jumps).
    pub predicate: Option<String>,
    /// Byte offsets of the first and last skipped instruction.
    pub span: (u32, u32),
    /// Counts over the skipped instructions.
    pub counts: Counts,
}

impl Function {
    /// The loops, by the module's rules: backward jumps other than
    /// self-loops, one per head, crossing ranges resolved for the earlier
    /// head. Sorted by head.
    pub fn loops(&self) -> Result<Vec<Loop>, SassError> {
        let index_of: BTreeMap<u32, usize> = self
            .instructions
            .iter()
            .enumerate()
            .map(|(i, ins)| (ins.offset, i))
            .collect();
        let mut by_head: BTreeMap<usize, usize> = BTreeMap::new();
        for (at, ins) in self.instructions.iter().enumerate() {
            let Some(label) = ins.target.as_ref().filter(|_| ins.is_jump()) else {
                continue;
            };
            let target = *self
                .labels
                .get(label)
                .ok_or_else(|| SassError::UnknownLabel {
                    function: self.name.clone(),
                    offset: ins.offset,
                    label: label.clone(),
                })?;
            if target >= ins.offset {
                continue;
            }
            let Some(&head) = index_of.get(&target) else {
                continue;
            };
            let end = by_head.entry(head).or_insert(at);
            *end = (*end).max(at);
        }
        let candidates: Vec<Loop> = by_head
            .into_iter()
            .map(|(head, back_edge)| Loop { head, back_edge })
            .collect();
        Ok(candidates
            .iter()
            .filter(|l| {
                !candidates
                    .iter()
                    .any(|other| other.head < l.head && other.crosses(l))
            })
            .copied()
            .collect())
    }

    /// The steady-state loop (the module's rule), or `None` without loops.
    pub fn steady_state_loop(&self) -> Result<Option<Loop>, SassError> {
        let loops = self.loops()?;
        let own_mma = |l: &Loop| {
            (l.head..=l.back_edge)
                .filter(|&i| {
                    !loops.iter().any(|inner| {
                        l.contains(inner) && (inner.head..=inner.back_edge).contains(&i)
                    })
                })
                .filter(|&i| matches!(self.instructions[i].mnemonic(), "HMMA" | "HGMMA"))
                .count()
        };
        let scored: Vec<(usize, &Loop)> = loops.iter().map(|l| (own_mma(l), l)).collect();
        let best_mma = scored.iter().map(|(m, _)| *m).max().unwrap_or(0);
        let chosen = if best_mma > 0 {
            // Most own MMAs; then the shorter body; then the earlier head.
            scored
                .iter()
                .filter(|(m, _)| *m == best_mma)
                .map(|(_, l)| *l)
                .min_by_key(|l| (l.body_len(), l.head))
        } else {
            // The innermost loop with the most instructions; then the earlier.
            loops
                .iter()
                .filter(|l| !loops.iter().any(|inner| l.contains(inner)))
                .min_by_key(|l| (std::cmp::Reverse(l.body_len()), l.head))
        };
        Ok(chosen.copied())
    }

    /// The [`LoopReport`] of this function.
    pub fn report(&self) -> Result<LoopReport, SassError> {
        let chosen = self.steady_state_loop()?;
        let (span, counts, skips) = match chosen {
            Some(l) => {
                let body = &self.instructions[l.head..=l.back_edge];
                let span = (body[0].offset, body[body.len() - 1].offset);
                (Some(span), Counts::of(body), self.skips(&l))
            }
            None => (None, Counts::default(), Vec::new()),
        };
        Ok(LoopReport {
            kernel: self.name.clone(),
            total_instructions: self.instructions.len() as u32,
            span,
            counts,
            skips,
        })
    }

    /// The blocks of `l` that forward jumps inside it skip: from the
    /// instruction after the jump to the one before its target, when the
    /// target is inside the loop. Labels are resolved by [`Function::loops`]
    /// first, so an unknown one is already an error there.
    pub fn skips(&self, l: &Loop) -> Vec<Skip> {
        let body = &self.instructions[l.head..=l.back_edge];
        let end = body[body.len() - 1].offset;
        body.iter()
            .enumerate()
            .filter(|(_, ins)| ins.is_jump())
            .filter_map(|(at, ins)| {
                let target = *self.labels.get(ins.target.as_ref()?)?;
                if target <= ins.offset || target > end {
                    return None;
                }
                let skipped: Vec<Instruction> = body[at + 1..]
                    .iter()
                    .take_while(|i| i.offset < target)
                    .cloned()
                    .collect();
                let (first, last) = (skipped.first()?, skipped.last()?);
                Some(Skip {
                    branch: ins.offset,
                    predicate: ins.predicate.clone(),
                    span: (first.offset, last.offset),
                    counts: Counts::of(&skipped),
                })
            })
            .collect()
    }
}

/// Parses `nvdisasm` output (with or without `-c`) into its functions, in
/// order. Lines outside a `.text.` section are ignored.
pub fn parse(text: &str) -> Result<Vec<Function>, SassError> {
    let mut functions: Vec<Function> = Vec::new();
    // Whether the current section is code (`.text.NAME`).
    let mut in_text = false;
    // Labels seen since the last instruction: they name the next offset.
    let mut pending: Vec<String> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let error = |why| SassError::Parse {
            line: n + 1,
            text: raw.to_string(),
            why,
        };
        if let Some(rest) = line.strip_prefix("//-") {
            // A section header: `//----- .text.NAME -----`.
            flush_labels(functions.last_mut(), &mut pending);
            let section = rest.trim_matches('-').trim();
            let name = section.strip_prefix(".text.").filter(|s| !s.is_empty());
            in_text = name.is_some();
            functions.extend(name.map(|name| Function {
                name: name.to_string(),
                ..Function::default()
            }));
            continue;
        }
        let Some(function) = functions.last_mut().filter(|_| in_text) else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("/*") {
            let (offset, body) = rest.split_once("*/").ok_or_else(|| error("no `*/`"))?;
            let offset = u32::from_str_radix(offset.trim(), 16)
                .map_err(|_| error("the offset is not hexadecimal"))?;
            let ins = parse_instruction(offset, body).ok_or_else(|| error("no opcode"))?;
            for label in pending.drain(..) {
                function.labels.insert(label, offset);
            }
            function.instructions.push(ins);
        } else if let Some(label) = line
            .strip_suffix(':')
            .filter(|l| !l.contains(char::is_whitespace))
        {
            pending.push(label.to_string());
        }
    }
    flush_labels(functions.last_mut(), &mut pending);
    Ok(functions)
}

/// Labels after a function's last instruction name its end.
fn flush_labels(function: Option<&mut Function>, pending: &mut Vec<String>) {
    let Some(function) = function else {
        pending.clear();
        return;
    };
    let end = function.instructions.last().map_or(0, |i| i.offset + 16);
    for label in pending.drain(..) {
        function.labels.insert(label, end);
    }
}

/// `[@PRED] OPCODE OPERANDS ;` (what follows the offset comment).
fn parse_instruction(offset: u32, body: &str) -> Option<Instruction> {
    let body = body.trim().trim_end_matches(';').trim_end();
    let (predicate, rest) = match body.strip_prefix('@') {
        Some(p) => {
            let (pred, rest) = p.split_once(char::is_whitespace)?;
            (Some(format!("@{pred}")), rest.trim_start())
        }
        None => (None, body),
    };
    let (opcode, operands) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if opcode.is_empty() {
        return None;
    }
    let target = operands
        .split_once("`(")
        .and_then(|(_, t)| t.split_once(')'))
        .map(|(label, _)| label.to_string());
    Some(Instruction {
        offset,
        predicate,
        opcode: opcode.to_string(),
        operands: operands.trim().to_string(),
        target,
    })
}

/// Locates `nvdisasm`: `$JAGGED_NVDISASM`, then [`ptxas::find_tool`].
pub fn find_nvdisasm() -> Option<PathBuf> {
    std::env::var_os("JAGGED_NVDISASM")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| ptxas::find_tool("nvdisasm"))
}

/// Disassembles `cubin` with `nvdisasm -c`.
pub fn disassemble(cubin: &[u8]) -> Result<String, SassError> {
    let nvdisasm = find_nvdisasm().ok_or(SassError::NvdisasmNotFound)?;
    let path = ptxas::temp_path("cubin");
    std::fs::write(&path, cubin).map_err(|source| SassError::Io {
        path: path.clone(),
        source,
    })?;
    let result = Command::new(&nvdisasm).arg("-c").arg(&path).output();
    // Best-effort cleanup: a leftover temporary is harmless.
    let _ = std::fs::remove_file(&path);
    let result = result.map_err(|source| SassError::Io {
        path: nvdisasm.clone(),
        source,
    })?;
    if !result.status.success() {
        let mut log = String::from_utf8_lossy(&result.stdout).into_owned();
        log.push_str(&String::from_utf8_lossy(&result.stderr));
        return Err(SassError::Rejected { log });
    }
    Ok(String::from_utf8_lossy(&result.stdout).into_owned())
}

/// The [`LoopReport`] of every function of a disassembly.
pub fn analyze(text: &str) -> Result<Vec<LoopReport>, SassError> {
    parse(text)?.iter().map(Function::report).collect()
}

/// The reports of every kernel in `cubin`.
pub fn analyze_cubin(cubin: &[u8]) -> Result<Vec<LoopReport>, SassError> {
    analyze(&disassemble(cubin)?)
}

/// Assembles `ptx` for `arch` and reports every kernel. Both tools are
/// looked up first, so that a missing one is the error.
pub fn analyze_ptx(ptx: &str, arch: Arch) -> Result<Vec<LoopReport>, SassError> {
    let ptxas = ptxas::find().ok_or(PtxasError::NotFound)?;
    find_nvdisasm().ok_or(SassError::NvdisasmNotFound)?;
    let (_, cubin) = ptxas::assemble_cubin_with(&ptxas, ptx, arch)?;
    analyze_cubin(&cubin)
}

/// [`analyze_cubin`] on a cubin file.
pub fn analyze_cubin_file(path: &Path) -> Result<Vec<LoopReport>, SassError> {
    let cubin = std::fs::read(path).map_err(|source| SassError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    analyze_cubin(&cubin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `nvdisasm -c` output of a flash attention kernel for
    /// sm_80 (lines copied from ours, cut down): a persistent outer loop
    /// (`.L_x_5`) around a zero-fill loop without MMAs (`.L_x_1`), the MMA
    /// loop (`.L_x_2`, predicated forward branches, a spin loop `.L_x_4`
    /// nested in it, a predicated call out and an unconditional back edge),
    /// an epilogue MMA in the outer loop only, an out-of-line slow path that
    /// jumps back into the MMA loop, and the trap loop after `EXIT`.
    const KERNEL: &str = r#"	.headerflags	@"EF_CUDA_TEXMODE_UNIFIED EF_CUDA_64BIT_ADDRESS EF_CUDA_SM80 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM80)"
	.elftype	@"ET_EXEC"


//--------------------- .text.attn --------------------------
	.section	.text.attn,"ax",@progbits
	.sectionflags	@"SHF_BARRIERS=1"
	.sectioninfo	@"SHI_REGISTERS=144"
	.align	128
        .global         attn
        .type           attn,@function
        .size           attn,(.L_x_9 - attn)
        .other          attn,@"STO_CUDA_ENTRY STV_DEFAULT"
attn:
.text.attn:
        /*0000*/                   IMAD.MOV.U32 R1, RZ, RZ, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
.L_x_5:
        /*0020*/                   ISETP.GE.U32.AND P0, PT, R11, R138, PT ;
.L_x_1:
        /*0030*/                   STG.E.128 [R24.64], RZ ;
        /*0040*/                   ISETP.GE.U32.AND.EX P1, PT, R36, R45, PT, P1 ;
        /*0050*/              @!P1 BRA `(.L_x_1) ;
.L_x_2:
        /*0060*/                   DEPBAR.LE SB0, 0x0 ;
        /*0070*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0080*/               @P0 BRA `(.L_x_3) ;
        /*0090*/                   LDGSTS.E.BYPASS.128 [R126+0x9000], [R74.64], !P3 ;
.L_x_3:
        /*00a0*/                   LDSM.16.M88.4 R20, [R128] ;
.L_x_4:
        /*00b0*/                   LDS R3, [R2] ;
        /*00c0*/                   ISETP.NE.AND P2, PT, R3, RZ, PT ;
        /*00d0*/              @!P2 BRA `(.L_x_4) ;
        /*00e0*/                   HMMA.16816.F32.BF16 R104, R20.reuse, R72, RZ ;
        /*00f0*/                   HMMA.16816.F32.BF16 R72, R20, R74, RZ ;
        /*0100*/                   FMNMX R5, R104, R105, !PT ;
        /*0110*/                   SHFL.BFLY PT, R11, R12, 0x1, 0x1f ;
        /*0120*/                   FFMA R6, R104, R125, -R5 ;
        /*0130*/                   MUFU.EX2 R6, R6 ;
        /*0140*/                   MUFU.RCP R7, R7 ;
        /*0150*/                   FMUL R8, R8, R6 ;
        /*0160*/                   FADD R9, R9, R6 ;
        /*0170*/               @P0 CALL.REL.NOINC `(.L_x_6) ;
        /*0180*/                   BRA `(.L_x_2) ;
.L_x_6:
        /*0190*/                   HMMA.16816.F32.BF16 R40, R64.reuse, R44, R40 ;
        /*01a0*/              @!P0 BRA P1, `(.L_x_5) ;
        /*01b0*/                   EXIT ;
.L_x_7:
        /*01c0*/                   MUFU.RCP R11, R26 ;
        /*01d0*/                   BRA `(.L_x_3) ;
.L_x_8:
        /*01e0*/                   BRA `(.L_x_8);
        /*01f0*/                   NOP;
.L_x_9:
"#;

    fn parse_one(text: &str) -> Function {
        let mut functions = parse(text).expect("parses");
        assert_eq!(functions.len(), 1);
        functions.remove(0)
    }

    #[test]
    fn parses_instructions_predicates_and_labels() {
        let f = parse_one(KERNEL);
        assert_eq!(f.name, "attn");
        assert_eq!(f.instructions.len(), 32);
        let outer = &f.instructions[26];
        assert_eq!(outer.offset, 0x1a0);
        assert_eq!(outer.predicate.as_deref(), Some("@!P0"));
        assert_eq!(outer.opcode, "BRA");
        assert_eq!(outer.operands, "P1, `(.L_x_5)");
        assert_eq!(outer.target.as_deref(), Some(".L_x_5"));
        assert!(outer.is_jump());
        assert!(!f.instructions[23].is_jump(), "CALL is not a jump");
        assert_eq!(f.instructions[30].target.as_deref(), Some(".L_x_8"));
        assert_eq!(f.labels[".L_x_3"], 0xa0);
        // A label after the last instruction names the end.
        assert_eq!(f.labels[".L_x_9"], 0x200);
    }

    #[test]
    fn finds_nested_loops_but_not_the_trap_or_a_re_entry() {
        let f = parse_one(KERNEL);
        let spans: Vec<(u32, u32)> = f
            .loops()
            .expect("labels resolve")
            .iter()
            .map(|l| {
                (
                    f.instructions[l.head].offset,
                    f.instructions[l.back_edge].offset,
                )
            })
            .collect();
        // Outer, zero-fill, MMA, spin; not the trap `BRA` to itself at 0x1e0
        // and not 0x0a0..0x1d0 (the slow path's jump back into the MMA loop).
        assert_eq!(
            spans,
            vec![(0x20, 0x1a0), (0x30, 0x50), (0x60, 0x180), (0xb0, 0xd0)]
        );
    }

    #[test]
    fn the_steady_state_loop_has_the_most_own_mmas() {
        let reports = analyze(KERNEL).expect("analyzes");
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!(r.kernel, "attn");
        assert_eq!(r.total_instructions, 32);
        // The outer loop holds 3 MMAs but owns 1; the MMA loop owns 2.
        assert_eq!(r.span, Some((0x60, 0x180)));
        assert_eq!(
            r.counts,
            Counts {
                instructions: 19,
                hmma: 2,
                hgmma: 0,
                hgmma_as_hmma: 0,
                ldsm: 1,
                ldgsts: 1,
                utmaldg: 0,
                bar: 1,
                mufu_ex2: 1,
                shfl: 1,
                ffma: 1,
                fmul: 1,
                fadd: 1,
            }
        );
        assert_eq!(r.counts.per_mma(), Some(9.5));
        assert_eq!(r.counts.per_hmma_work(), Some(9.5));
        // The one forward jump inside the loop skips the cp.async; the
        // spin loop's back edge and the call out skip nothing.
        assert_eq!(
            r.skips,
            vec![Skip {
                branch: 0x80,
                predicate: Some("@P0".into()),
                span: (0x90, 0x90),
                counts: Counts {
                    instructions: 1,
                    ldgsts: 1,
                    ..Counts::default()
                },
            }]
        );
    }

    /// Two kernels (sm_90 shapes: `HGMMA`, `UTMALDG`, a `BRA.U` back edge
    /// on a uniform predicate), the second without MMAs: an outer loop
    /// around two loops, the larger of which is chosen; a data section
    /// between them is skipped.
    const TWO_KERNELS: &str = r#"
//--------------------- .text.fwd --------------------------
        .global         fwd
fwd:
.text.fwd:
        /*0000*/                   S2R R0, SR_TID.X ;
.L_x_0:
        /*0010*/                   UTMALDG.2D [UR8], [UR4] ;
        /*0020*/                   WARPGROUP.ARRIVE ;
        /*0030*/                   HGMMA.64x64x16.F32.BF16 R56, gdesc[UR36], RZ, !UPT ;
        /*0040*/                   HGMMA.64x64x16.F32.BF16 R56, gdesc[UR20], R56, gsb0 ;
        /*0050*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*0060*/               BRA.U !UP0, `(.L_x_0) ;
        /*0070*/                   EXIT ;
.L_x_1:
        /*0080*/                   BRA `(.L_x_1);
//--------------------- .nv.constant0.fwd --------------------------
        /*0000*/                   .word 0x0 ;
//--------------------- .text.pre --------------------------
pre:
.text.pre:
.L_x_2:
        /*0000*/                   IADD3 R2, R2, 0x1, RZ ;
.L_x_3:
        /*0010*/                   FFMA R4, R4, R5, R6 ;
        /*0020*/              @!P0 BRA `(.L_x_3) ;
.L_x_4:
        /*0030*/                   FADD R4, R4, R5 ;
        /*0040*/                   FADD R4, R4, R6 ;
        /*0050*/              @!P1 BRA `(.L_x_4) ;
        /*0060*/              @!P2 BRA `(.L_x_2) ;
        /*0070*/                   EXIT ;
"#;

    #[test]
    fn hgmma_kernels_and_kernels_without_mma() {
        let reports = analyze(TWO_KERNELS).expect("analyzes");
        let names: Vec<&str> = reports.iter().map(|r| r.kernel.as_str()).collect();
        assert_eq!(names, ["fwd", "pre"]);
        let fwd = &reports[0];
        assert_eq!(fwd.span, Some((0x10, 0x60)));
        assert_eq!((fwd.counts.hgmma, fwd.counts.utmaldg), (2, 1));
        assert_eq!(fwd.counts.per_mma(), Some(3.0));
        // Each 64x64x16 is 8 HMMA.16816 of work per warp.
        assert_eq!(fwd.counts.hgmma_as_hmma, 16);
        assert_eq!(fwd.counts.per_hmma_work(), Some(6.0 / 16.0));
        let pre = &reports[1];
        assert_eq!(pre.span, Some((0x30, 0x50)));
        assert_eq!((pre.counts.instructions, pre.counts.fadd), (3, 2));
        assert_eq!(pre.counts.per_mma(), None);
    }

    #[test]
    fn a_kernel_without_loops() {
        let text = "//----- .text.k -----\nk:\n        /*0000*/                   EXIT ;\n";
        let r = &analyze(text).expect("analyzes")[0];
        assert_eq!((r.span, r.total_instructions), (None, 1));
        assert!(r.skips.is_empty());
        assert_eq!(r.counts, Counts::default());
    }

    #[test]
    fn malformed_lines_and_unknown_labels_are_errors() {
        let bad_offset = "//----- .text.k -----\n        /*00zz*/   EXIT ;\n";
        let err = parse(bad_offset).unwrap_err();
        assert!(matches!(err, SassError::Parse { line: 2, .. }), "{err}");
        let no_close = "//----- .text.k -----\n        /*0000   EXIT ;\n";
        assert!(matches!(parse(no_close), Err(SassError::Parse { .. })));
        let dangling = "//----- .text.k -----\n        /*0000*/   @P0 BRA `(.L_x_7) ;\n";
        let err = analyze(dangling).unwrap_err();
        assert!(
            matches!(err, SassError::UnknownLabel { offset: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(".L_x_7"));
    }

    #[test]
    fn a_missing_nvdisasm_says_how_to_install_it() {
        let message = SassError::NvdisasmNotFound.to_string();
        assert!(message.contains("scripts/install-tools.sh"), "{message}");
    }
}

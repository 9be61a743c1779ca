//! [`KernelBuilder`], the way to write a [`Kernel`]: fresh registers and
//! labels, predicated regions, structured loops ([`RangeLoop`]) and one
//! method per common instruction.

use super::ir::{
    Address, BinOp, Cmp, Guard, Inst, Kernel, Label, MatrixLayout, Operand, Param, ParamId,
    ParamType, Reg, RegClass, SharedArray, SharedId, ShflMode, Space, Special, Stmt, TernOp, Type,
    UnOp,
};

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

    /// The `.minnctapersm` set so far, if any.
    pub fn min_ctas_per_sm(&self) -> Option<u32> {
        self.kernel.min_ctas_per_sm
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

    /// Loads a scalar parameter into a fresh register. A tensor map is read
    /// in place ([`Self::param_addr`]): loading one is refused when the
    /// kernel is printed.
    pub fn ld_param(&mut self, param: ParamId) -> Reg {
        let ty = match self.kernel.params[param.0 as usize].ty {
            ParamType::U32 => Type::U32,
            ParamType::U64 | ParamType::Ptr { .. } | ParamType::TensorMap => Type::U64,
            ParamType::F32 => Type::F32,
        };
        let dst = self.reg(ty.reg_class());
        self.push(Inst::LdParam { ty, dst, param });
        dst
    }

    /// The generic address (u64) of the by-value tensor-map parameter
    /// `param`, which `cp.async.bulk.tensor` reads in place.
    pub fn param_addr(&mut self, param: ParamId) -> Reg {
        let dst = self.reg(RegClass::B64);
        self.push(Inst::ParamAddr { dst, param });
        dst
    }

    /// Loops on `mbarrier.try_wait.parity` until the phase of parity
    /// `parity` (u32, 0 or 1) of the mbarrier at `mbar` (32-bit shared)
    /// has completed.
    pub fn mbarrier_wait(&mut self, mbar: Address, parity: impl Into<Operand>) {
        let parity = parity.into();
        let again = self.label();
        self.place(again);
        let done = self.reg(RegClass::Pred);
        self.push(Inst::MbarrierTryWait {
            done,
            addr: mbar,
            parity,
        });
        self.bra_if(done, true, again);
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
        let (a, b) = (a.into(), b.into());
        // ptxas calls a subroutine for every u64 division: expand the
        // constant ones (see `kernel/divide.rs`).
        if let (BinOp::Div | BinOp::Rem, Type::U64, Operand::Int(d)) = (op, ty, b)
            && self.div_rem_const_u64(op, dst, a, d)
        {
            return;
        }
        self.push(Inst::Binary { op, ty, dst, a, b });
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

    /// `selp.ty` into an existing register: `dst = pred ? a : b`.
    pub fn selp_to(
        &mut self,
        ty: Type,
        dst: Reg,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        pred: Reg,
    ) {
        self.push(Inst::Selp {
            ty,
            dst,
            a: a.into(),
            b: b.into(),
            pred,
        });
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

    /// The `wgmma` descriptor (u64) of a shared-memory matrix of `layout`
    /// whose start is the shared address `addr` (u32, below 256 KiB).
    pub fn matrix_descriptor(&mut self, addr: Reg, layout: MatrixLayout) -> Reg {
        let units = self.binary(BinOp::Shr, Type::U32, addr, Operand::Int(4));
        let wide = self.cvt(Type::U64, Type::U32, units);
        // The immediate is the descriptor's bit pattern (negative for swizzle field 2 and 3).
        let bits = layout.descriptor_bits() as i64;
        self.binary(BinOp::Or, Type::B64, wide, Operand::Int(bits))
    }

    /// `bar.sync 0`.
    pub fn barrier(&mut self) {
        self.push(Inst::BarSync {
            id: Operand::Int(0),
            threads: None,
        });
    }

    /// `bar.sync id, threads`: a named barrier of `threads` threads (`id`
    /// an immediate or a u32 register).
    pub fn named_barrier(&mut self, id: impl Into<Operand>, threads: u32) {
        self.push(Inst::BarSync {
            id: id.into(),
            threads: Some(threads),
        });
    }

    /// `bar.warp.sync -1` (every lane of the warp).
    pub fn warp_sync(&mut self) {
        self.push(Inst::WarpSync);
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

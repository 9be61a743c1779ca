//! `jagged_to_padded_dense`: `dense[b, i] = values[offsets[b] + i]` for
//! `i < n_b`, else the padding value. One thread per vector chunk of a dense
//! row, grid-stride over `B * max_len * chunks`.

use crate::kernel::{BinOp, Cmp, Operand, Type};
use crate::launch::{ParamBinding, SizeExpr};
use crate::spec::DType;

use super::map::row_elem;
use super::{
    Entry, Plan, Radix, chunking, for_each_mixed_radix, grid, load_index, load_raw, pack_f32,
    store_raw,
};

/// Everything the padding template is specialized on.
#[derive(Clone, Debug, PartialEq)]
pub struct PadDesc {
    /// Entry name.
    pub name: String,
    /// Row width `W`.
    pub width: u64,
    /// Element type of values and output.
    pub dtype: DType,
    /// Offsets element type.
    pub index: DType,
}

/// Generates the kernel. Inputs: 0 = values, 1 = offsets; output 0 = dense;
/// the `padding_value` attribute is an f32 parameter (rounded to `dtype` on store).
pub fn pad_kernel(desc: &PadDesc) -> Plan {
    let ch = chunking(desc.width, desc.dtype);
    let work_items = (SizeExpr::Batch * SizeExpr::MaxLen) * SizeExpr::Const(ch.chunks);
    let mut e = Entry::new(desc.name.clone());
    let out = e.buffer("dense", ParamBinding::Output(0));
    let values = e.buffer("values", ParamBinding::Input(0));
    let offsets = e.buffer("offsets", ParamBinding::Input(1));
    let max_len = e.size("max_len", SizeExpr::MaxLen);
    let work = e.size("work", work_items.clone());
    let pad = e.float_attr("padding_value");
    let b = &mut e.b;
    // Work item = (chunk, row i, sequence b) as mixed-radix digits: no
    // 64-bit division by the run-time max_len per item.
    let radices = [Radix::Const(ch.chunks), Radix::Reg(max_len)];
    for_each_mixed_radix(b, work, &radices, |b, w, digits, seq| {
        let (chunk, i) = (digits[0], digits[1]);
        let seq_end = b.binary(BinOp::Add, Type::U64, seq, Operand::Int(1));
        let o0 = load_index(b, offsets, seq, desc.index);
        let o1 = load_index(b, offsets, seq_end, desc.index);
        let len = b.binary(BinOp::Sub, Type::S64, o1, o0);
        // Dense element index: the work index counts chunks of `vec` elements.
        let out_elem = b.binary(BinOp::Mul, Type::U64, w, Operand::Int(i64::from(ch.vec)));
        let inside = b.setp(Cmp::Lt, Type::S64, i, len);
        let pad_path = b.label();
        let next = b.label();
        b.bra_if(inside, true, pad_path);
        let src_row = b.binary(BinOp::Add, Type::U64, o0, i);
        let src_elem = row_elem(b, src_row, chunk, desc.width, ch.vec);
        let raw = load_raw(b, values, src_elem, desc.dtype, ch.vec);
        store_raw(b, out, out_elem, desc.dtype, raw);
        b.bra(next);
        b.place(pad_path);
        let pads = pack_f32(b, desc.dtype, &vec![pad; ch.vec as usize]);
        store_raw(b, out, out_elem, desc.dtype, pads);
        b.place(next);
    });
    let mut rule = grid(work_items, u64::from(super::BLOCK_THREADS));
    rule.max_blocks = super::LOOPING_BLOCKS;
    e.finish(rule)
}

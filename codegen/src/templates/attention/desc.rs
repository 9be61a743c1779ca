//! What an attention kernel is specialized on: the activation, the pair
//! masks, and the [`AttentionDesc`] that gathers them with the tiles.

use crate::kernel::Type;
use crate::spec::DType;

use super::hopper::{swizzle_align, swizzle_span};
use super::tiles::Tiles;

/// The probability function between the two products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Softmax over the allowed keys of each row.
    Softmax,
    /// `silu(s)` pointwise.
    Silu,
}

/// Which `(query i, key j)` pairs a mask keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PairMask {
    /// `j <= i` (causal).
    KeyNotAfterQuery,
    /// `j >= i` (FBGEMM's `use_mask`).
    KeyNotBeforeQuery,
}

/// Everything the forward kernel is specialized on.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionDesc {
    /// Entry name.
    pub name: String,
    /// Heads `H` (rows of q / k / v are `[H, D]`).
    pub heads: u32,
    /// Head dim `D` (of q, k and v): 32, 64, 128 or 256.
    pub head_dim: u32,
    /// f16 or bf16.
    pub dtype: DType,
    /// Offsets dtype.
    pub index: DType,
    /// Softmax or SiLU.
    pub activation: Activation,
    /// Scores are `scale * q.k` with the f32 graph attribute of this name; 1 if `None`.
    pub scale_attr: Option<String>,
    /// Softmax: pairs outside this mask are excluded before normalizing
    /// (`-inf` scores).
    pub score_mask: Option<PairMask>,
    /// Pairs outside this mask get `p = 0` after the activation (for softmax:
    /// after normalization; rows are not renormalized).
    pub prob_mask: Option<PairMask>,
    /// Divide `p` by the run-time `max_len`.
    pub divide_by_max_len: bool,
    /// Write `lse [T, H]` (softmax only).
    pub lse: bool,
    /// Tile shape.
    pub tiles: Tiles,
    /// The Hopper mainloop (sm_90a): both products on `wgmma.mma_async`
    /// from swizzled shared tiles (see `hopper`); `mma.sync` otherwise.
    pub wgmma: bool,
}

impl AttentionDesc {
    /// Bytes between two consecutive rows of a shared tile: a padded row
    /// of `D` 16-bit elements, or with `wgmma` one swizzled row of a
    /// column block (128 bytes, or 64 at D = 32).
    pub(super) fn smem_stride(&self) -> u32 {
        if self.wgmma {
            swizzle_span(self.head_dim)
        } else {
            self.head_dim * 2 + 16
        }
    }

    /// Shared bytes per row of a tile (every column block of it).
    pub(super) fn smem_row_bytes(&self) -> u32 {
        if self.wgmma {
            self.head_dim * 2
        } else {
            self.smem_stride()
        }
    }

    /// Shared rows the Q tile takes: `block_m`, or with `wgmma` at least
    /// `block_n` (there every tile's column blocks are `block_n` rows
    /// apart).
    pub(super) fn smem_q_rows(&self) -> u32 {
        if self.wgmma {
            self.tiles.block_m.max(self.tiles.block_n)
        } else {
            self.tiles.block_m
        }
    }

    /// Dynamic shared memory: the Q tile and the stages of K and V (with
    /// `wgmma`, and the slack to align them to the swizzle pattern).
    pub fn dynamic_shared_bytes(&self) -> u32 {
        let align = if self.wgmma {
            swizzle_align(self.head_dim)
        } else {
            0
        };
        let rows = self.smem_q_rows() + 2 * self.tiles.stages * self.tiles.block_n;
        align + self.smem_row_bytes() * rows
    }

    /// True when keys past the query block never contribute (causal).
    pub(in crate::templates) fn keys_end_at_block(&self) -> bool {
        self.score_mask == Some(PairMask::KeyNotAfterQuery)
            || self.prob_mask == Some(PairMask::KeyNotAfterQuery)
    }

    /// The `mma` operand type of the input dtype.
    pub(in crate::templates) fn mma_type(&self) -> Type {
        match self.dtype {
            DType::F16 => Type::F16,
            _ => Type::Bf16,
        }
    }
}

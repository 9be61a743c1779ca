//! Tile policy of the attention kernels: the CTA size of the backward
//! kernels and the forward kernel's tile shape per head dim and max-length
//! bucket.

/// Threads per CTA of the backward kernels (4 warps) and of forward
/// kernels with 64-row query blocks.
pub const ATTENTION_THREADS: u32 = 128;

/// Rows of one `mma.m16n8k16` tile.
pub(super) const TILE_ROWS: u32 = 16;

/// Tile shape of the forward kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tiles {
    /// Query rows per CTA (16 per warp).
    pub block_m: u32,
    /// Keys per pipeline stage.
    pub block_n: u32,
    /// Query rows per warp: 16 (one `m16` tile) or 32 (two; every K / V
    /// fragment read from shared memory feeds two `mma`s).
    pub warp_rows: u32,
    /// `cp.async` pipeline stages of K and V (blocks in shared memory at
    /// once; the copies run `stages - 1` blocks ahead).
    pub stages: u32,
}

impl Tiles {
    /// The tiles for a head dim and max-length bucket.
    ///
    /// Keys per block: 64, or 32 for D = 256 (the f32 output accumulator
    /// already holds 128 registers per thread there) and for buckets of at
    /// most 32 rows with D <= 64 (no wasted keys; with D = 128 ptxas put that
    /// variant at 128 registers and spilled).
    ///
    /// Query rows per CTA: 128 for D = 64 / 128 and buckets of at least
    /// 1024 rows, where sequences are long enough that each K/V tile staged
    /// in shared memory serves twice the query rows; 64 otherwise (less work
    /// past `n_b` on short sequences).
    ///
    /// Query rows per warp: 32 with 128-row blocks at D = 64 (4 warps, as
    /// FlashAttention-2 on sm_80+). With 16 rows per warp an `ldmatrix.x4`
    /// (512 bytes of shared memory, about 4 cycles of an SM's 128 B/cycle)
    /// feeds two `m16n8k16` products (about 2 cycles each on the SM's
    /// tensor cores), so shared-memory bandwidth, not the tensor cores,
    /// bounds the loop; a second `m16` tile per warp reuses each K / V
    /// fragment for two more products. 16 rows per warp otherwise: at
    /// D = 128 two row tiles (128 f32 accumulator registers per thread)
    /// made ptxas spill (56 bytes inside the key loop with 64 keys per
    /// block, 12 bytes outside it with 32).
    pub fn for_spec(head_dim: u32, max_len_bucket: u32) -> Tiles {
        let (block_m, warp_rows) = match (head_dim, max_len_bucket >= 1024) {
            (64, true) => (128, 32),
            (128, true) => (128, 16),
            _ => (64, 16),
        };
        let block_n = if head_dim >= 256 || (max_len_bucket <= 32 && head_dim <= 64) {
            32
        } else {
            64
        };
        // Three stages with 128-row query blocks (long sequences, one or
        // two CTAs per SM by registers): 72 KiB of shared memory at D = 64,
        // 136 KiB at D = 128, within sm_80's 163 KiB per CTA (and two
        // D = 64 CTAs per SM). Two otherwise: a third stage of the 64-row
        // blocks would cost CTAs per SM.
        let stages = if block_m == 128 { 3 } else { 2 };
        Tiles {
            block_m,
            block_n,
            warp_rows,
            stages,
        }
    }

    /// Threads per CTA: one warp per `warp_rows` query rows.
    pub fn threads(&self) -> u32 {
        self.block_m / self.warp_rows * 32
    }

    /// `m16` row tiles per warp.
    pub fn row_tiles(&self) -> usize {
        (self.warp_rows / TILE_ROWS) as usize
    }
}

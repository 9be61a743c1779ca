//! Global memory: allocations backed by `AtomicU64` words, so that CTAs running on
//! different host threads can read, write and atomically update it without undefined
//! behaviour (relaxed atomic loads and stores compile to plain moves on x86-64).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// First global address handed out; addresses below it (null, small integers, 32-bit
/// truncations) are never valid.
pub const GLOBAL_BASE: u64 = 0x0000_0001_0000_0000;
/// Free bytes between two allocations, so that running just past the end of one buffer
/// is reported instead of landing in the next.
pub const RED_ZONE: u64 = 4096;
/// End of the global address space: the generic windows of shared, local and module
/// memory start here.
pub const GLOBAL_END: u64 = 0x0100_0000_0000_0000;

/// One device allocation.
#[derive(Debug)]
pub struct Allocation {
    /// Requested size in bytes.
    pub size: u64,
    words: Box<[AtomicU64]>,
}

impl Allocation {
    /// A zero-filled allocation of `size` bytes, or why the host cannot hold it.
    pub fn try_new(size: u64) -> Result<Allocation, String> {
        let n = usize::try_from(size.div_ceil(8))
            .map_err(|_| "more than the host can address".to_string())?;
        let mut words = Vec::new();
        words
            .try_reserve_exact(n)
            .map_err(|e| format!("host memory: {e}"))?;
        words.resize_with(n, || AtomicU64::new(0));
        Ok(Allocation {
            size,
            words: words.into_boxed_slice(),
        })
    }

    /// Reads `out.len()` bytes at byte offset `off` (in bounds; any alignment).
    pub fn read(&self, off: u64, out: &mut [u8]) {
        let start = (off % 8) as usize;
        if out.is_empty() {
            return;
        }
        if start + out.len() <= 8 {
            let w = self.words[(off / 8) as usize].load(Relaxed).to_le_bytes();
            out.copy_from_slice(&w[start..start + out.len()]);
            return;
        }
        let mut i = 0usize;
        while i < out.len() {
            let o = off + i as u64;
            let w = self.words[(o / 8) as usize].load(Relaxed).to_le_bytes();
            let start = (o % 8) as usize;
            let n = (8 - start).min(out.len() - i);
            out[i..i + n].copy_from_slice(&w[start..start + n]);
            i += n;
        }
    }

    /// Reads the `size`-byte (1, 2, 4 or 8) little-endian value at naturally aligned `off`.
    #[inline]
    pub fn read_small(&self, off: u64, size: u32) -> u64 {
        let w = self.words[(off / 8) as usize].load(Relaxed);
        if size >= 8 {
            w
        } else {
            (w >> (8 * (off % 8))) & ((1u64 << (8 * size)) - 1)
        }
    }

    /// Writes the low `size` (1, 2, 4 or 8) bytes of `v` at naturally aligned `off`.
    /// With `exclusive` (no other thread touches the memory now) a partial word is a plain
    /// load and store; otherwise a compare-and-swap, so concurrent writers of the word's
    /// other bytes are not lost.
    #[inline]
    pub fn write_small(&self, off: u64, size: u32, v: u64, exclusive: bool) {
        let word = &self.words[(off / 8) as usize];
        if size >= 8 {
            word.store(v, Relaxed);
        } else {
            let shift = 8 * (off % 8);
            let mask = ((1u64 << (8 * size)) - 1) << shift;
            let val = (v << shift) & mask;
            if exclusive {
                word.store((word.load(Relaxed) & !mask) | val, Relaxed);
            } else {
                let _ = word.fetch_update(Relaxed, Relaxed, |w| Some((w & !mask) | val));
            }
        }
    }

    /// Writes `data` at byte offset `off` (in bounds; any alignment). Partial words are
    /// updated with a compare-and-swap so that concurrent writers of the other bytes of
    /// the same word are not lost.
    pub fn write(&self, off: u64, data: &[u8]) {
        let mut i = 0usize;
        while i < data.len() {
            let o = off + i as u64;
            let start = (o % 8) as usize;
            let n = (8 - start).min(data.len() - i);
            let word = &self.words[(o / 8) as usize];
            if n == 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[i..i + 8]);
                word.store(u64::from_le_bytes(b), Relaxed);
            } else {
                let mut bytes = [0u8; 8];
                bytes[start..start + n].copy_from_slice(&data[i..i + n]);
                let val = u64::from_le_bytes(bytes);
                let mask = if n == 8 {
                    u64::MAX
                } else {
                    ((1u64 << (8 * n)) - 1) << (8 * start)
                };
                let _ = word.fetch_update(Relaxed, Relaxed, |w| Some((w & !mask) | val));
            }
            i += n;
        }
    }

    /// Atomically replaces the `size`-byte (2, 4 or 8) value at aligned offset `off` with
    /// `f(old)`; returns the old value.
    pub fn rmw(&self, off: u64, size: u32, f: impl Fn(u64) -> u64) -> u64 {
        let word = &self.words[(off / 8) as usize];
        let shift = 8 * (off % 8);
        let mask = if size >= 8 {
            u64::MAX
        } else {
            ((1u64 << (8 * size)) - 1) << shift
        };
        let mut old = 0;
        let _ = word.fetch_update(Relaxed, Relaxed, |w| {
            old = (w & mask) >> shift;
            Some((w & !mask) | ((f(old) << shift) & mask))
        });
        old
    }
}

/// The set of allocations of a device, by base address.
#[derive(Debug, Default)]
pub struct GlobalMemory {
    pub allocs: BTreeMap<u64, Allocation>,
}

impl GlobalMemory {
    /// The allocation containing `[addr, addr + len)`, with the offset of `addr` in it.
    pub fn find(&self, addr: u64, len: u64) -> Option<(u64, &Allocation)> {
        let (base, a) = self.allocs.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        if end <= base + a.size {
            Some((*base, a))
        } else {
            None
        }
    }

    /// Describes where `addr` is relative to the nearest allocation (for error messages).
    pub fn describe(&self, addr: u64) -> String {
        let below = self.allocs.range(..=addr).next_back();
        let above = self.allocs.range(addr..).next();
        match (below, above) {
            (Some((b, a)), _) if addr < b + a.size + RED_ZONE => format!(
                "{} bytes past the start of the {}-byte allocation at {:#x}",
                addr - b,
                a.size,
                b
            ),
            (_, Some((b, a))) if *b - addr < RED_ZONE => {
                format!(
                    "{} bytes before the {}-byte allocation at {:#x}",
                    b - addr,
                    a.size,
                    b
                )
            }
            _ => "not near any allocation".to_string(),
        }
    }
}

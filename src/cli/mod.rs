//! What the `jagc` command line reads and writes (feature `cli`): NumPy
//! `.npy` files ([`npy`], through the npyz crate) and the kernel-argument
//! specs of `jagc emu` and `jagc crosscheck` ([`argspec`]). File formats are
//! the command line's concern: the library crates (jagged-ir,
//! jagged-runtime, ...) exchange typed host tensors and buffers only.

pub mod argspec;
pub mod npy;

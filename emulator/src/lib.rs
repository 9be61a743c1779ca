//! jagged-emu: runs PTX kernels on the CPU with SIMT semantics and a memory checker.

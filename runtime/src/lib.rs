//! Runtime: kernel cache and launch backends (CUDA through cudarc, or the emulator) (issue 4).

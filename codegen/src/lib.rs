//! Lowering of jagged IR graphs to SIMT kernel IR and PTX text (issue 4).

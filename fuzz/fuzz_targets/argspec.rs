//! The `--arg SPEC` syntax of `jagc emu` and `jagc crosscheck`
//! (`jagged::cli::argspec::KernelArgSpec`). Any text must parse or give an
//! `ArgSpecError` whose message names the spec (as its docs promise).
#![no_main]

use jagged::cli::argspec::KernelArgSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    match spec.parse::<KernelArgSpec>() {
        Ok(parsed) => {
            // Formatting a parsed spec must not panic either.
            let _ = format!("{parsed:?}");
        }
        Err(err) => {
            assert_eq!(err.spec, spec, "the error names another spec");
            let _ = err.to_string();
        }
    }
});

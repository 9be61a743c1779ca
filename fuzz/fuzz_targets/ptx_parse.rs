//! The PTX front end: lexer, parser and decoder (`jagged_emu::Module::parse`).
//! Any text must give a module or an `EmuError`, never a panic, a hang or an
//! allocation abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ptx) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(module) = jagged_emu::Module::parse(ptx) {
        let names: Vec<String> = module.kernel_names().map(str::to_string).collect();
        for name in &names {
            assert!(module.static_shared_bytes(name).is_some(), "kernel {name} lost");
        }
    }
});

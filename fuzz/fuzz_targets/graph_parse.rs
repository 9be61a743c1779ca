//! The IR text parser and the validator behind it (`jagged_ir::Graph::parse`).
//! Any text must give a graph or a `ParseError`; a graph that parses must
//! print as canonical text that parses back to the same text and hash.
#![no_main]

use jagged_ir::Graph;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(graph) = Graph::parse(text) else {
        return;
    };
    let canonical = graph.to_string();
    let again = match Graph::parse(&canonical) {
        Ok(g) => g,
        Err(e) => panic!("canonical text does not parse back: {e}\n{canonical}"),
    };
    assert_eq!(again.to_string(), canonical, "canonical text is not a fixed point");
    assert_eq!(again.canonical_hash(), graph.canonical_hash(), "hash changed");
    let _ = jagged_ir::lengths_inputs(&graph);
});

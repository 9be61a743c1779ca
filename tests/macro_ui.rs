//! `#[jagged_kernel]` misuse is a compile error at the offending span: one
//! case per error kind in tests/ui, each with its reviewed `.stderr`.

#[test]
fn dsl_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

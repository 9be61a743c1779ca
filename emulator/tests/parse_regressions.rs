//! Inputs the fuzzer found that made the PTX parser panic: each must now
//! parse or fail with a typed error.

use jagged_emu::Module;

/// Regression (fuzzer): `[%rd1-9223372036854775808]` overflowed the
/// product of the sign and the offset in the address parser.
#[test]
fn an_address_offset_of_minus_i64_min_does_not_overflow() {
    let ptx = ".version 8.0
.target sm_80
.address_size 64
.visible .entry k(.param .u64 p)
{
  .reg .b32 %r<2>;
  .reg .b64 %rd<2>;
  ld.param.u64 %rd1, [p];
  ld.global.u32 %r1, [%rd1-9223372036854775808];
  ret;
}
";
    // A wrapped offset, as address arithmetic wraps: parsing succeeds.
    assert!(Module::parse(ptx).is_ok());
}

/// Regression (fuzzer): a vector operand nested some 20 000 braces deep
/// overflowed the stack of the recursive operand parser; a vector inside a
/// vector is an error now (PTX has none).
#[test]
fn deeply_nested_vector_operands_are_an_error_not_a_stack_overflow() {
    let ptx = format!(
        ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{{\nmov.b32 %r1, {}",
        "{".repeat(21_000)
    );
    let err = Module::parse(&ptx).expect_err("nested vectors");
    assert!(err.to_string().contains("vector"), "{err}");
}

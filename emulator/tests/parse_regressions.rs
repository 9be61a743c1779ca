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

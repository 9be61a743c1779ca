//! Spec sizes (regressions): `max_len = u64::MAX` became bucket 0, and inner
//! dims were narrowed to u32 by `as` (4294967300 became a width-4 kernel);
//! the checked constructors refuse them with typed errors.

use jagged_codegen::spec::{
    MAX_MAX_LEN_BUCKET, SpecError, inner_dims_u32, max_len_bucket, try_max_len_bucket,
};
use jagged_codegen::{Arch, DType, Spec};

#[test]
fn max_len_u64_max_is_not_bucket_zero() {
    assert_eq!(max_len_bucket(u64::MAX), MAX_MAX_LEN_BUCKET);
    assert_eq!(
        try_max_len_bucket(u64::MAX),
        Err(SpecError::MaxLenTooLarge { max_len: u64::MAX })
    );
    assert_eq!(
        try_max_len_bucket((1 << 31) + 1),
        Err(SpecError::MaxLenTooLarge {
            max_len: (1 << 31) + 1
        })
    );
    assert_eq!(try_max_len_bucket(1 << 31), Ok(1 << 31));
    assert_eq!(try_max_len_bucket(0), Ok(16));
    assert_eq!(try_max_len_bucket(17), Ok(32));
    let spec = Spec::new(vec![4], u64::MAX, DType::F32, DType::I32, Arch::Sm80);
    assert_eq!(spec.max_len_bucket, MAX_MAX_LEN_BUCKET);
}

#[test]
fn inner_dim_above_u32_is_refused_not_narrowed() {
    let err = inner_dims_u32(&[4_294_967_300]).unwrap_err();
    assert_eq!(
        err,
        SpecError::InnerDimTooLarge {
            index: 0,
            dim: 4_294_967_300
        }
    );
    let err =
        Spec::try_new(&[8, 4_294_967_300], 16, DType::F32, DType::I32, Arch::Sm80).unwrap_err();
    assert!(err.to_string().contains("4294967300"), "{err}");
    // Dims that fit but whose product does not: rows wider than 32 bits.
    let err = inner_dims_u32(&[65_536, 65_536]).unwrap_err();
    assert!(matches!(err, SpecError::RowTooWide { .. }), "{err}");
    let spec = Spec::try_new(&[3, 5], 300, DType::BF16, DType::I64, Arch::Sm90a).unwrap();
    assert_eq!(
        spec,
        Spec::new(vec![3, 5], 300, DType::BF16, DType::I64, Arch::Sm90a)
    );
    assert_eq!(spec.row_width(), 15);
}

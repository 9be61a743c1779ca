//! `JAGGED_REF_MEMORY_BUDGET` overrides the reference's memory budget (its
//! own test binary: the variable is process-wide).

use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrValue, BindError, DType, DenseTensor, EvalOptions, TensorData, evaluate};

#[test]
fn the_environment_variable_sets_the_budget() {
    let g = ops::jagged_to_padded_dense(&JaggedSpec {
        dtype: DType::F64,
        offsets: DType::I64,
        inner: vec![4],
    })
    .unwrap();
    let values = DenseTensor::new(vec![3, 4], TensorData::F64(vec![1.0; 12])).unwrap();
    let offsets = DenseTensor::new(vec![3], TensorData::I64(vec![0, 1, 3])).unwrap();
    let inputs = [("values", &values), ("offsets", &offsets)];
    let attrs = [("max_len", AttrValue::Index(2))];
    let set = |v: &str| {
        // SAFETY: this binary has this one test, so no other thread reads
        // the environment meanwhile.
        unsafe { std::env::set_var("JAGGED_REF_MEMORY_BUDGET", v) }
    };
    set("1K");
    assert_eq!(EvalOptions::from_env().unwrap().memory_budget, 1024);
    assert!(evaluate(&g, &inputs, &attrs).is_ok());
    set("400");
    let err = evaluate(&g, &inputs, &attrs).unwrap_err();
    assert!(
        matches!(err, BindError::MemoryBudget { budget: 400, .. }),
        "{err}"
    );
    set("8G");
    assert_eq!(EvalOptions::from_env().unwrap().memory_budget, 8 << 30);
    set("lots");
    let err = evaluate(&g, &inputs, &attrs).unwrap_err();
    assert!(
        matches!(&err, BindError::BadMemoryBudget { value } if value == "lots"),
        "{err}"
    );
    // SAFETY: as above.
    unsafe { std::env::remove_var("JAGGED_REF_MEMORY_BUDGET") }
    assert_eq!(EvalOptions::from_env().unwrap(), EvalOptions::default());
}

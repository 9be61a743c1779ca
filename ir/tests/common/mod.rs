//! Shared test helpers: random jagged inputs and tolerance checks.
#![allow(dead_code)]

use jagged_ir::{DType, DenseTensor, TensorData};
use proptest::prelude::*;

/// A random jagged input: lengths (some empty, some 1, some above `max_len`),
/// offsets dtype, `max_len`, inner dims and f64 values `[T, inner...]`.
#[derive(Clone, Debug)]
pub struct JaggedCase {
    pub lens: Vec<usize>,
    pub offsets_i64: bool,
    pub max_len: usize,
    pub inner: Vec<usize>,
    pub values: Vec<f64>,
}

impl JaggedCase {
    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    pub fn offsets(&self) -> Vec<usize> {
        let mut o = vec![0];
        for &l in &self.lens {
            o.push(o[o.len() - 1] + l);
        }
        o
    }

    pub fn rows(&self) -> usize {
        self.lens.iter().sum()
    }

    pub fn row(&self) -> usize {
        self.inner.iter().product()
    }

    pub fn offsets_dtype(&self) -> DType {
        if self.offsets_i64 {
            DType::I64
        } else {
            DType::I32
        }
    }

    /// The offsets as a host tensor of the case's offsets dtype.
    pub fn offsets_tensor(&self) -> DenseTensor {
        index_tensor(&self.offsets(), self.offsets_i64)
    }

    /// The values `[T, inner...]` as an f64 host tensor.
    pub fn values_tensor(&self) -> DenseTensor {
        let mut shape = vec![self.rows()];
        shape.extend_from_slice(&self.inner);
        f64_tensor(shape, &self.values)
    }

    /// `n_b = min(L_b, max_len)`.
    pub fn n(&self, b: usize) -> usize {
        self.lens[b].min(self.max_len)
    }
}

pub fn index_tensor(values: &[usize], i64: bool) -> DenseTensor {
    let data = if i64 {
        TensorData::I64(values.iter().map(|&v| v as i64).collect())
    } else {
        TensorData::I32(values.iter().map(|&v| v as i32).collect())
    };
    DenseTensor::new(vec![values.len()], data).unwrap()
}

pub fn f64_tensor(shape: Vec<usize>, values: &[f64]) -> DenseTensor {
    DenseTensor::new(shape, TensorData::F64(values.to_vec())).unwrap()
}

/// Lengths: often 0 and 1, sometimes above any `max_len` used (<= 4).
pub fn lengths(max_batch: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![2 => Just(0usize), 2 => Just(1usize), 4 => 0usize..=7],
        0..=max_batch,
    )
}

/// A random jagged case whose inner dims are drawn by `inner`.
pub fn jagged_case(inner: impl Strategy<Value = Vec<usize>>) -> impl Strategy<Value = JaggedCase> {
    (lengths(4), any::<bool>(), 1usize..=4, inner).prop_flat_map(
        |(lens, offsets_i64, max_len, inner)| {
            let count = lens.iter().sum::<usize>() * inner.iter().product::<usize>();
            prop::collection::vec(-2.0f64..2.0, count).prop_map(move |values| JaggedCase {
                lens: lens.clone(),
                offsets_i64,
                max_len,
                inner: inner.clone(),
                values,
            })
        },
    )
}

/// `||got - want|| <= rel * ||want||` (and exact when `want` is all zero), no NaN,
/// same shape.
pub fn assert_close(got: &DenseTensor, shape: &[usize], want: &[f64], rel: f64) {
    assert_eq!(got.shape(), shape, "shape");
    let got = got.to_f64();
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|x| !x.is_nan()), "NaN in output {got:?}");
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    assert!(
        err <= rel * norm,
        "relative error {} > {rel}\n got {got:?}\nwant {want:?}",
        err / norm
    );
}

/// Every builtin graph at a fixed specialization, named for snapshots.
pub fn builtin_graphs() -> Vec<(&'static str, jagged_ir::Graph)> {
    use jagged_ir::ReduceOp;
    use jagged_ir::ops::*;
    let f32_h4 = JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I64,
        inner: vec![4],
    };
    let bf16_2x3 = JaggedSpec {
        dtype: DType::BF16,
        offsets: DType::I32,
        inner: vec![2, 3],
    };
    let attention = |causal, activation| AttentionSpec {
        input_dtype: DType::BF16,
        dtype: DType::BF16,
        offsets: DType::I32,
        heads: 2,
        head_dim: 64,
        value_dim: 32,
        causal,
        activation,
    };
    let fbgemm = |use_mask| FbgemmAttentionSpec {
        input_dtype: DType::F32,
        dtype: DType::BF16,
        offsets: DType::I64,
        head_dim: 16,
        use_mask,
    };
    vec![
        ("complete_cumsum_i64", complete_cumsum(DType::I64)),
        ("jagged_to_padded_dense", jagged_to_padded_dense(&bf16_2x3)),
        ("dense_to_jagged", dense_to_jagged(&bf16_2x3)),
        (
            "jagged_dense_elementwise_mul",
            jagged_dense_elementwise_mul(&f32_h4),
        ),
        ("jagged_softmax", jagged_softmax(&f32_h4)),
        ("jagged_reduce_sum", jagged_reduce(&f32_h4, ReduceOp::Sum)),
        ("jagged_reduce_mean", jagged_reduce(&f32_h4, ReduceOp::Mean)),
        ("jagged_reduce_max", jagged_reduce(&f32_h4, ReduceOp::Max)),
        (
            "masked_select_jagged_u8",
            masked_select_jagged(&bf16_2x3, DType::U8),
        ),
        (
            "masked_select_jagged_bool",
            masked_select_jagged(&f32_h4, DType::Bool),
        ),
        (
            "jagged_flash_attention_softmax",
            jagged_flash_attention(&attention(false, Activation::Softmax)),
        ),
        (
            "jagged_flash_attention_softmax_causal",
            jagged_flash_attention(&attention(true, Activation::Softmax)),
        ),
        (
            "jagged_flash_attention_silu",
            jagged_flash_attention(&attention(false, Activation::Silu)),
        ),
        (
            "jagged_flash_attention_silu_causal",
            jagged_flash_attention(&attention(true, Activation::Silu)),
        ),
        (
            "fbgemm_jagged_flash_attention_basic",
            fbgemm_jagged_flash_attention_basic(&fbgemm(false)),
        ),
        (
            "fbgemm_jagged_flash_attention_basic_use_mask",
            fbgemm_jagged_flash_attention_basic(&fbgemm(true)),
        ),
    ]
    .into_iter()
    .map(|(name, g)| (name, g.unwrap_or_else(|e| panic!("{name}: {e}"))))
    .collect()
}

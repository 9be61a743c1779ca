//! Binding inputs to a graph and checking offsets and lengths: `jagged_ir::bind`,
//! `check_lengths_inputs`, `tensor::check_offsets` / `check_lengths`, the
//! `JaggedTensor` constructors and padded conversions, and the reference
//! evaluator on the bound inputs (whose sizes it must check before it
//! allocates: "absurd offsets or `max_len` are a typed error, never an
//! overflow panic or an allocation abort").
//!
//! The bytes drive a structured generator (`arbitrary::Unstructured`): sizes
//! and offsets are mostly small, sometimes at the edges of their types.
#![no_main]

use std::sync::OnceLock;

use jagged_ir::tensor::{check_lengths, check_offsets};
use jagged_ir::{
    AttrKind, AttrValue, DType, DenseTensor, Dim, EvalOptions, Graph, InputDesc, JaggedTensor,
    TensorData, bind, check_lengths_inputs, evaluate_with, lengths_inputs,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Graphs to bind inputs to: the checked-in `graph_parse` seeds.
const GRAPHS: &[&str] = &[
    include_str!("../corpus/graph_parse/rms_norm.jir"),
    include_str!("../corpus/graph_parse/softmax_mask_sum.jir"),
    include_str!("../corpus/graph_parse/weighted_pool.jir"),
    include_str!("../corpus/graph_parse/complete_cumsum.jir"),
    include_str!("../corpus/graph_parse/jagged_to_padded.jir"),
    include_str!("../corpus/graph_parse/dense_to_jagged.jir"),
    include_str!("../corpus/graph_parse/masked_select.jir"),
    include_str!("../corpus/graph_parse/jagged_softmax.jir"),
    include_str!("../corpus/graph_parse/flash_attention_causal.jir"),
];

/// Elements a generated host tensor may hold (keeps each run fast and small).
const MAX_ELEMS: usize = 4096;

fn graphs() -> &'static [Graph] {
    static PARSED: OnceLock<Vec<Graph>> = OnceLock::new();
    PARSED.get_or_init(|| {
        GRAPHS
            .iter()
            .map(|t| Graph::parse(t).expect("a seed graph parses"))
            .collect()
    })
}

/// A size: mostly small, sometimes large or at the edge of `usize`.
fn size(u: &mut Unstructured) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=9)? {
        0..=5 => u.int_in_range(0..=8)?,
        6 => u.int_in_range(0..=1 << 16)?,
        7 => *u.choose(&[
            usize::MAX,
            usize::MAX - 1,
            usize::MAX / 2 + 1,
            1 << 32,
            (1 << 32) + 1,
            1 << 31,
            i32::MAX as usize,
            i64::MAX as usize,
        ])?,
        _ => u.arbitrary()?,
    })
}

/// An offset or a length: mostly small and non-negative, sometimes anything.
fn index(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0u8..=9)? {
        0..=6 => u.int_in_range(0..=12)?,
        7 => *u.choose(&[
            -1,
            i64::MIN,
            i64::MAX,
            i64::from(i32::MAX),
            i64::from(i32::MAX) + 1,
            i64::from(i32::MIN),
            1 << 53,
            (1 << 53) + 1,
        ])?,
        _ => u.arbitrary()?,
    })
}

fn dtype(u: &mut Unstructured) -> Result<DType> {
    u.choose(&DType::ALL).copied()
}

fn shape(u: &mut Unstructured, max_dims: usize) -> Result<Vec<usize>> {
    let n = u.int_in_range(0..=max_dims)?;
    (0..n).map(|_| size(u)).collect()
}

/// `count` elements of `dtype` (clamped to [`MAX_ELEMS`]); index dtypes hold
/// fuzzed offsets or lengths, float ones fuzzed numbers.
fn data(u: &mut Unstructured, dtype: DType, count: usize) -> Result<TensorData> {
    let count = count.min(MAX_ELEMS);
    if dtype.is_index() {
        let values: Vec<i64> = (0..count).map(|_| index(u)).collect::<Result<_>>()?;
        return Ok(match dtype {
            DType::I32 => TensorData::I32(values.iter().map(|&v| v as i32).collect()),
            _ => TensorData::I64(values),
        });
    }
    let values: Vec<f64> = (0..count)
        .map(|_| {
            Ok(match u.int_in_range(0u8..=7)? {
                0..=5 => f64::from(u.int_in_range(-8i8..=8)?) / 4.0,
                _ => u.arbitrary()?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(TensorData::from_f64(dtype, &values))
}

/// Offsets (or lengths) as an i32 or i64 tensor, or as another dtype.
fn offsets_data(u: &mut Unstructured, values: &[i64]) -> Result<TensorData> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 | 1 => TensorData::I64(values.to_vec()),
        2 | 3 => TensorData::I32(values.iter().map(|&v| v as i32).collect()),
        _ => {
            let f: Vec<f64> = values.iter().map(|&v| v as f64).collect();
            TensorData::from_f64(dtype(u)?, &f)
        }
    })
}

fn indices(u: &mut Unstructured, max: usize) -> Result<Vec<i64>> {
    let n = u.int_in_range(0..=max)?;
    // Mostly non-decreasing from 0, as real offsets are.
    if u.ratio(3u8, 4)? {
        let mut out = Vec::with_capacity(n);
        let mut at = 0i64;
        for i in 0..n {
            if i > 0 {
                at = at.wrapping_add(index(u)?);
            }
            out.push(at);
        }
        return Ok(out);
    }
    (0..n).map(|_| index(u)).collect()
}

/// `check_offsets` and `check_lengths` on raw values.
fn raw_checks(u: &mut Unstructured) -> Result<()> {
    let values = indices(u, 64)?;
    let rows = if u.arbitrary()? { Some(size(u)?) } else { None };
    let _ = check_offsets("offsets", &values, rows);
    let lengths_dtype = dtype(u)?;
    if let Ok(offsets) = check_lengths("lengths", &values, lengths_dtype) {
        assert_eq!(offsets.len(), values.len() + 1);
        check_offsets("offsets", &offsets, None).expect("check_lengths gives valid offsets");
    }
    Ok(())
}

/// The `JaggedTensor` constructors and its padded conversions.
fn jagged(u: &mut Unstructured) -> Result<()> {
    let inner = shape(u, 3)?;
    let raw = indices(u, 24)?;
    let offsets = offsets_data(u, &raw)?;
    let values_dtype = dtype(u)?;
    // The row count the offsets (or lengths) imply, when they are sane.
    let rows = if u.arbitrary()? {
        raw.last().copied().unwrap_or(0)
    } else {
        raw.iter().fold(0i64, |a, &b| a.wrapping_add(b))
    };
    let row: usize = inner.iter().fold(1usize, |a, &b| a.saturating_mul(b));
    let count = if u.ratio(7u8, 8)? {
        usize::try_from(rows).unwrap_or(0).saturating_mul(row)
    } else {
        size(u)?
    };
    let values = data(u, values_dtype, count)?;
    let tensor = if u.arbitrary()? {
        JaggedTensor::from_offsets(values, &inner, offsets)
    } else {
        JaggedTensor::from_lengths(values, &inner, offsets)
    };
    let Ok(tensor) = tensor else {
        return Ok(());
    };
    let max_len = size(u)?;
    let padding: f64 = u.arbitrary()?;
    let _ = tensor.batch();
    let _ = tensor.offsets_usize();
    if let Ok(dense) = tensor.to_padded_dense(max_len, padding) {
        let _ = JaggedTensor::from_padded_dense(&dense, tensor.offsets().data().clone());
    }
    Ok(())
}

/// `from_padded_dense` with any dense shape and offsets.
fn padded(u: &mut Unstructured) -> Result<()> {
    let shape = shape(u, 5)?;
    let elems = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
    let Some(elems) = elems.filter(|&e| e <= MAX_ELEMS) else {
        return Ok(());
    };
    let values_dtype = dtype(u)?;
    let values = data(u, values_dtype, elems)?;
    let Ok(dense) = DenseTensor::new(shape, values) else {
        return Ok(());
    };
    let raw = indices(u, 24)?;
    let offsets = offsets_data(u, &raw)?;
    let _ = JaggedTensor::from_padded_dense(&dense, offsets);
    Ok(())
}

/// `bind` (and the reference evaluator) on one of the graphs, with inputs whose
/// names, dtypes and shapes mostly follow the declarations.
fn bind_graph(u: &mut Unstructured) -> Result<()> {
    let graph = u.choose(graphs())?;
    let (b, t, n) = (size(u)?, size(u)?, size(u)?);
    let mut names: Vec<String> = Vec::new();
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    let mut dtypes: Vec<DType> = Vec::new();
    for (_, name, ty) in graph.inputs() {
        match u.int_in_range(0u8..=15)? {
            0 => continue,
            1 => names.push(u.arbitrary::<String>()?),
            _ => names.push(name.to_string()),
        }
        dtypes.push(if u.ratio(1u8, 12)? { dtype(u)? } else { ty.dtype });
        let s = if u.ratio(1u8, 12)? {
            shape(u, 4)?
        } else {
            let mut s = Vec::with_capacity(ty.dims.len());
            for dim in &ty.dims {
                s.push(match dim {
                    _ if u.ratio(1u8, 16)? => size(u)?,
                    Dim::Batch => b,
                    Dim::BatchPlusOne => b.wrapping_add(1),
                    Dim::MaxLen => n,
                    Dim::Ragged(_) => t,
                    Dim::Static(k) => *k,
                });
            }
            s
        };
        shapes.push(s);
    }
    let mut attr_names: Vec<String> = Vec::new();
    let mut attr_values: Vec<AttrValue> = Vec::new();
    for decl in graph.attrs() {
        if u.ratio(1u8, 6)? {
            continue;
        }
        attr_names.push(if u.ratio(1u8, 16)? { u.arbitrary()? } else { decl.name.clone() });
        let index = match decl.kind {
            AttrKind::Index => !u.ratio(1u8, 8)?,
            AttrKind::Float => u.ratio(1u8, 8)?,
        };
        attr_values.push(if index {
            AttrValue::Index(size(u)?)
        } else {
            AttrValue::Float(u.arbitrary()?)
        });
    }
    let descs: Vec<InputDesc<'_>> = names
        .iter()
        .zip(&shapes)
        .zip(&dtypes)
        .map(|((name, shape), &dtype)| InputDesc { name, dtype, shape })
        .collect();
    let attrs: Vec<(&str, AttrValue)> = attr_names
        .iter()
        .map(String::as_str)
        .zip(attr_values.iter().copied())
        .collect();
    let bound = bind(graph, &descs, &attrs);

    // Host tensors of those shapes, where they are small, for the evaluator
    // (which binds again, then checks offsets and lengths values).
    let mut tensors: Vec<DenseTensor> = Vec::new();
    for (shape, &dtype) in shapes.iter().zip(&dtypes) {
        let elems = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let Some(elems) = elems.filter(|&e| e <= MAX_ELEMS) else {
            return Ok(());
        };
        let values = if dtype.is_index() && shape.len() == 1 && u.ratio(3u8, 4)? {
            // Offsets-like: non-decreasing from 0, ending near `t`.
            let mut v = indices(u, elems)?;
            v.resize(elems, i64::try_from(t).unwrap_or(i64::MAX));
            offsets_data_exact(dtype, &v)
        } else {
            data(u, dtype, elems)?
        };
        match DenseTensor::new(shape.clone(), values) {
            Ok(tensor) => tensors.push(tensor),
            Err(_) => return Ok(()),
        }
    }
    if bound.is_ok() {
        let lengths: Vec<(&str, Vec<i64>)> = lengths_inputs(graph)
            .into_iter()
            .filter_map(|(name, _)| {
                let i = names.iter().position(|n| n == name)?;
                Some((name, tensors[i].data().to_i64()?))
            })
            .collect();
        let lengths: Vec<(&str, &[i64])> =
            lengths.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let _ = check_lengths_inputs(graph, &lengths);
    }
    let inputs: Vec<(&str, &DenseTensor)> =
        names.iter().map(String::as_str).zip(tensors.iter()).collect();
    let options = EvalOptions {
        memory_budget: *u.choose(&[0, 1 << 10, 1 << 16, 1 << 20, 4 << 20])?,
    };
    let _ = evaluate_with(graph, &inputs, &attrs, &options);
    Ok(())
}

fn offsets_data_exact(dtype: DType, values: &[i64]) -> TensorData {
    match dtype {
        DType::I32 => TensorData::I32(values.iter().map(|&v| v as i32).collect()),
        _ => TensorData::I64(values.to_vec()),
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    match u.int_in_range(0u8..=3)? {
        0 => raw_checks(u),
        1 => jagged(u),
        2 => padded(u),
        _ => bind_graph(u),
    }
}

fuzz_target!(|data: &[u8]| {
    static BUDGET: std::sync::Once = std::sync::Once::new();
    BUDGET.call_once(|| {
        // The host conversions (`to_padded_dense`, ...) take their memory
        // budget from the environment: keep it small so that a large but
        // legal size is a typed error here, not a slow run.
        // SAFETY: set once, before any other thread of this process reads it.
        unsafe { std::env::set_var(jagged_ir::eval::MEMORY_BUDGET_ENV, "4M") };
    });
    let _ = run(&mut Unstructured::new(data));
});

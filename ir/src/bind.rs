//! Binding named inputs and attributes to a graph: the checks and size
//! inference every executor of a graph does before it computes anything.
//!
//! The reference evaluator ([`crate::evaluate`]) and the runtime's graph
//! launcher both take inputs by the names the graph declares; [`bind`] checks
//! them (names, dtypes, shapes), binds the attributes (given or defaulted) and
//! infers the run-time sizes `B` and `N` (`max_len`) from the input shapes and
//! the `max_len` attribute. Executors only describe their inputs as
//! [`InputDesc`]s, so host and device tensors share one implementation.

use std::collections::{BTreeMap, HashMap};

use crate::arena::Handle;
use crate::dtype::DType;
use crate::graph::{AttrKind, AttrValue, Dim, Graph, MAX_LEN, Node, Type};
use crate::tensor::TensorError;

/// Why inputs or attributes do not fit a graph.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A declared input was not given.
    #[error("missing input '{name}'")]
    MissingInput {
        /// The input.
        name: String,
    },
    /// An input was given that the graph does not declare.
    #[error("the graph has no input '{name}'")]
    UnknownInput {
        /// The name given.
        name: String,
    },
    /// An input of the wrong dtype.
    #[error("input '{name}': expected dtype {expected}, found {found}")]
    InputDtype {
        /// The input.
        name: String,
        /// The declared dtype.
        expected: DType,
        /// The dtype given.
        found: DType,
    },
    /// An input whose shape does not fit its declared type (or the sizes
    /// other inputs and attributes bound).
    #[error("input '{name}': shape {found:?} does not fit {expected}")]
    InputShape {
        /// The input.
        name: String,
        /// The declared type (with the sizes bound so far, where relevant).
        expected: String,
        /// The shape given.
        found: Vec<usize>,
    },
    /// A `max_len` above [`MAX_MAX_LEN`]: every executor refuses it alike
    /// (the kernels' row indices and buckets are 32-bit).
    #[error("max_len {max_len} is above the largest supported, {MAX_MAX_LEN} (2^31)")]
    MaxLenTooLarge {
        /// The value given (or bound from a dense input's shape).
        max_len: usize,
    },
    /// Two jagged inputs on one sequence set with different row counts `T`
    /// (both are named: which one is wrong, the offsets' last entry tells).
    #[error(
        "inputs '{first}' and '{name}' have {first_rows} and {rows} rows, but jagged inputs \
         on one sequence set have the same number of rows T (the last offset)"
    )]
    RowsDisagree {
        /// The input that bound `T` first.
        first: String,
        /// Its rows.
        first_rows: usize,
        /// The input that disagrees.
        name: String,
        /// Its rows.
        rows: usize,
    },
    /// An input whose shape has more elements than a `usize` holds (a
    /// device tensor's shape is not tied to its buffer until this check).
    #[error("input '{name}': shape {shape:?} has more elements than fit in a usize")]
    InputTooLarge {
        /// The input.
        name: String,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// A required attribute was not given and has no default.
    #[error("missing attribute '{name}'")]
    MissingAttribute {
        /// The attribute.
        name: String,
    },
    /// An attribute was given that the graph does not declare.
    #[error("the graph has no attribute '{name}'")]
    UnknownAttribute {
        /// The name given.
        name: String,
    },
    /// An attribute of the wrong kind (index vs float).
    #[error("attribute '{name}' must be of kind {}", expected.name())]
    AttributeKind {
        /// The attribute.
        name: String,
        /// Its declared kind.
        expected: AttrKind,
    },
    /// A symbolic dim the graph uses that no input or attribute binds.
    #[error("no input binds the dim {symbol}")]
    Unbound {
        /// `B` or `N`.
        symbol: &'static str,
    },
    /// Invalid offsets (the error names the input).
    #[error(transparent)]
    Offsets(#[from] TensorError),
    /// The reference evaluator would hold more f64 values than its memory
    /// budget allows (`bytes` is `None` when the count overflows a usize).
    #[error(
        "the reference evaluator needs {} for {value}, over its memory budget of {budget} bytes (set {} to change it)",
        bytes.map_or("more bytes than a usize counts".to_string(), |b| format!("{b} bytes")),
        crate::eval::MEMORY_BUDGET_ENV
    )]
    MemoryBudget {
        /// The value (node or input) being allocated, in text form.
        value: String,
        /// The bytes all values would hold with it.
        bytes: Option<u64>,
        /// The budget in bytes.
        budget: u64,
    },
    /// The memory budget environment variable is not a size.
    #[error(
        "{}={value:?} is not a size in bytes (e.g. 8589934592 or 8G)",
        crate::eval::MEMORY_BUDGET_ENV
    )]
    BadMemoryBudget {
        /// The variable's value.
        value: String,
    },
}

/// What binding needs to know of one given input: its name, element type
/// and shape (row-major; a jagged input is its values `[T, inner...]` and
/// its offsets `[B+1]`, two inputs).
#[derive(Clone, Copy, Debug)]
pub struct InputDesc<'a> {
    /// The name the input is given under.
    pub name: &'a str,
    /// Its element type.
    pub dtype: DType,
    /// Its shape.
    pub shape: &'a [usize],
}

/// The result of [`bind`]: the run-time sizes and the attribute values.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// `B`: the number of sequences (0 where the graph does not use it).
    pub batch: usize,
    /// `N`: the `max_len` bound (0 where the graph does not use it).
    pub max_len: usize,
    /// The rows `T` of each sequence set, as the jagged inputs on it give
    /// them (their offsets are not read here).
    pub rows: HashMap<Handle<Node>, usize>,
    /// Every declared attribute: the given value (an index given for a
    /// float attribute converted to a float), else the default.
    pub attrs: BTreeMap<String, AttrValue>,
}

/// Checks `inputs` and `attrs` against `graph` and infers `B`, `N` and each
/// sequence set's rows from the input shapes and the `max_len` attribute.
///
/// Every declared input must be given with its declared dtype and a shape
/// that fits its type; sizes bound twice must agree; `B` and `N` must be
/// bound where the graph uses them.
pub fn bind(
    graph: &Graph,
    inputs: &[InputDesc<'_>],
    attrs: &[(&str, AttrValue)],
) -> Result<Binding, BindError> {
    for input in inputs {
        if !graph.inputs().any(|(_, n, _)| n == input.name) {
            return Err(BindError::UnknownInput {
                name: input.name.to_string(),
            });
        }
    }
    let attrs = bind_attrs(graph, attrs)?;
    let mut batch: Option<usize> = None;
    let mut max_len: Option<usize> = match attrs.get(MAX_LEN) {
        Some(AttrValue::Index(n)) => Some(*n),
        _ => None,
    };
    let mut rows = HashMap::new();
    // The input that bound each sequence set's rows first, for errors.
    let mut row_source: HashMap<Handle<Node>, (&str, usize)> = HashMap::new();
    for (_, name, ty) in graph.inputs() {
        let input =
            inputs
                .iter()
                .find(|i| i.name == name)
                .ok_or_else(|| BindError::MissingInput {
                    name: name.to_string(),
                })?;
        if input.dtype != ty.dtype {
            return Err(BindError::InputDtype {
                name: name.to_string(),
                expected: ty.dtype,
                found: input.dtype,
            });
        }
        let shape_error = || BindError::InputShape {
            name: name.to_string(),
            expected: user_type(ty),
            found: input.shape.to_vec(),
        };
        if input.shape.len() != ty.dims.len() {
            return Err(shape_error());
        }
        if crate::tensor::shape_elems(input.shape).is_none() {
            return Err(BindError::InputTooLarge {
                name: name.to_string(),
                shape: input.shape.to_vec(),
            });
        }
        for (dim, &size) in ty.dims.iter().zip(input.shape) {
            let (slot, value) = match dim {
                Dim::Batch => (&mut batch, size),
                Dim::BatchPlusOne => (&mut batch, size.checked_sub(1).ok_or_else(shape_error)?),
                Dim::MaxLen => (&mut max_len, size),
                Dim::Static(n) if *n == size => continue,
                Dim::Static(_) => return Err(shape_error()),
                Dim::Ragged(s) => match row_source.get(s) {
                    Some((first, first_rows)) if *first_rows != size => {
                        return Err(BindError::RowsDisagree {
                            first: first.to_string(),
                            first_rows: *first_rows,
                            name: name.to_string(),
                            rows: size,
                        });
                    }
                    _ => {
                        rows.insert(*s, size);
                        row_source.entry(*s).or_insert((name, size));
                        continue;
                    }
                },
            };
            match slot {
                Some(bound) if *bound != value => return Err(shape_error()),
                _ => *slot = Some(value),
            }
        }
    }
    let mut uses_b = false;
    let mut uses_n = false;
    for (h, node) in graph.nodes().iter() {
        uses_n |= matches!(node, Node::Seqs { truncate: true, .. });
        if let Type::Tensor(t) = graph.type_of(h) {
            uses_b |= t.dims.iter().any(|d| !matches!(d, Dim::Static(_)));
            uses_n |= t.dims.contains(&Dim::MaxLen);
        }
    }
    let max_len = resolve(max_len, uses_n, "N")?;
    if max_len > MAX_MAX_LEN {
        return Err(BindError::MaxLenTooLarge { max_len });
    }
    Ok(Binding {
        batch: resolve(batch, uses_b, "B")?,
        max_len,
        rows,
        attrs,
    })
}

/// The integer inputs that a `scan complete` turns into offsets
/// (`complete_cumsum`'s `lengths`), with their dtype. Every executor checks
/// their values with [`check_lengths`](crate::tensor::check_lengths) before
/// computing: a negative length or a sum that overflows the dtype is an error
/// naming the input (a kernel would write wrapped-around offsets).
pub fn lengths_inputs(graph: &Graph) -> Vec<(&str, DType)> {
    let mut found: Vec<(&str, DType)> = Vec::new();
    for (_, node) in graph.nodes().iter() {
        let Node::Scan {
            mode: crate::graph::ScanMode::Complete,
            arg,
            ..
        } = node
        else {
            continue;
        };
        if let Node::Input { name, ty } = graph.node(*arg)
            && ty.dtype.is_index()
            && !found.iter().any(|(n, _)| n == name)
        {
            found.push((name.as_str(), ty.dtype));
        }
    }
    found
}

/// Checks the values of every input [`lengths_inputs`] lists: `values`
/// gives an input's elements by name (inputs it does not give are skipped,
/// so an executor may pass only those it holds on the host).
pub fn check_lengths_inputs(graph: &Graph, values: &[(&str, &[i64])]) -> Result<(), BindError> {
    for (name, dtype) in lengths_inputs(graph) {
        if let Some((_, v)) = values.iter().find(|(n, _)| *n == name) {
            crate::tensor::check_lengths(name, v, dtype)?;
        }
    }
    Ok(())
}

/// The largest `max_len` any executor accepts (2^31): the reference
/// evaluator and the kernels agree on it.
pub const MAX_MAX_LEN: usize = 1 << 31;

/// A type as users see it: `bf16[T, 2, 64]` (`T` the rows of a jagged
/// value, `B` the sequences, `max_len`), not the IR's `%1` handles.
pub fn user_type(ty: &crate::graph::TensorType) -> String {
    let dims: Vec<String> = ty
        .dims
        .iter()
        .enumerate()
        .map(|(k, d)| match d {
            Dim::Ragged(_) if k == 0 => "T".to_string(),
            Dim::Ragged(_) => "n_b".to_string(),
            Dim::Batch => "B".to_string(),
            Dim::BatchPlusOne => "B+1".to_string(),
            Dim::MaxLen => "max_len".to_string(),
            Dim::Static(n) => n.to_string(),
        })
        .collect();
    format!("{}[{}]", ty.dtype, dims.join(", "))
}

/// The input named `name` among `inputs` (host or device tensors).
pub fn find_input<'a, T>(inputs: &[(&str, &'a T)], name: &str) -> Result<&'a T, BindError> {
    inputs
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| BindError::MissingInput {
            name: name.to_string(),
        })
}

/// A symbolic size: bound, else 0 where the graph does not use it.
fn resolve(bound: Option<usize>, used: bool, symbol: &'static str) -> Result<usize, BindError> {
    match bound {
        Some(size) => Ok(size),
        None if !used => Ok(0),
        None => Err(BindError::Unbound { symbol }),
    }
}

/// The attribute values: given ones checked against the declarations, else defaults.
fn bind_attrs(
    graph: &Graph,
    given: &[(&str, AttrValue)],
) -> Result<BTreeMap<String, AttrValue>, BindError> {
    let mut values = BTreeMap::new();
    for (name, value) in given {
        let decl = graph
            .attr(name)
            .ok_or_else(|| BindError::UnknownAttribute {
                name: name.to_string(),
            })?;
        // A float attribute accepts an index value (`--attr scale=1`); an
        // index attribute does not accept a float.
        let value = match (decl.kind, *value) {
            (AttrKind::Float, AttrValue::Index(n)) => AttrValue::Float(n as f64),
            (kind, v) if v.kind() == kind => v,
            _ => {
                return Err(BindError::AttributeKind {
                    name: name.to_string(),
                    expected: decl.kind,
                });
            }
        };
        values.insert(name.to_string(), value);
    }
    for decl in graph.attrs() {
        if !values.contains_key(&decl.name) {
            let value = decl.default.ok_or_else(|| BindError::MissingAttribute {
                name: decl.name.clone(),
            })?;
            values.insert(decl.name.clone(), value);
        }
    }
    Ok(values)
}

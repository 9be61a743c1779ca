//! The canonical text form: reviewed snapshots of every builtin graph, exact
//! round trips, the stable hash, parse errors with line and column, and round
//! trips of random small graphs.

mod common;

use common::builtin_graphs;
use jagged_ir::graph::fnv1a64;
use jagged_ir::{
    BinaryOp, DType, Dim, Graph, GraphBuilder, IndexPredicate, ReduceOp, ScanMode, TensorType,
    UnaryOp,
};
use proptest::prelude::*;

#[test]
fn builtin_graph_snapshots() {
    for (name, graph) in builtin_graphs() {
        insta::assert_snapshot!(name, graph.to_string());
    }
}

#[test]
fn builtin_graphs_round_trip() {
    for (name, graph) in builtin_graphs() {
        let text = graph.to_string();
        let back = Graph::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(back, graph, "{name}");
        assert_eq!(back.to_string(), text, "{name}");
        assert_eq!(back.canonical_hash(), graph.canonical_hash(), "{name}");
    }
}

#[test]
fn canonical_hashes_differ_between_builtins() {
    let graphs = builtin_graphs();
    let mut hashes: Vec<u64> = graphs.iter().map(|(_, g)| g.canonical_hash()).collect();
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), graphs.len());
}

#[test]
fn fnv1a64_matches_published_vectors() {
    // Test vectors of the FNV reference (isthe.com/chongo/tech/comp/fnv).
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn canonical_hash_is_fnv_of_the_text() {
    for (_, graph) in builtin_graphs() {
        assert_eq!(
            graph.canonical_hash(),
            fnv1a64(graph.to_string().as_bytes())
        );
    }
}

#[test]
fn parser_ignores_layout() {
    let text = "graph g {  attr max_len : index %0 = input offsets : i64[B + 1]\n\
                %1 = seqs %0 , max_len : seqs %2 = input x : f32[%1,4]\n\n\
                %3 = exp %2 : f32[%1, 4] output y = %3 }";
    let g = Graph::parse(text).unwrap();
    assert_eq!(g.nodes().len(), 4);
    assert!(g.to_string().contains("  %3 = exp %2 : f32[%1, 4]\n"));
}

/// The line ops print as they parse (negative shifts and several reshape
/// dims included).
#[test]
fn line_ops_round_trip() {
    let text = "graph line_ops {
  %0 = input offsets : i32[B+1]
  %1 = seqs %0 : seqs
  %2 = input x : f32[%1, 2, 6]
  %3 = rank descending %2, axis 0 : i32[%1, 2, 6]
  %4 = shift %2, axis 0, by -3 : f32[%1, 2, 6]
  %5 = topk values ascending %4, axis 2, k 2 : f32[%1, 2, 2]
  %6 = topk indices descending %2, axis 1, k 1 : i32[%1, 1, 6]
  %7 = reshape %2, [3, 4] : f32[%1, 3, 4]
  %8 = take %2, %6, axis 1 : f32[%1, 1, 6, 6]
  output r = %3
  output v = %5
  output s = %7
  output t = %8
}
";
    let g = Graph::parse(text).expect("parses");
    assert_eq!(g.to_string(), text);
    assert_eq!(Graph::parse(&g.to_string()).expect("reparses"), g);
    // topk's k is between 1 and the axis' length; take's axis is static.
    for (bad, why) in [
        ("topk values ascending %2, axis 2, k 7 : f32[%1, 2, 7]", "k"),
        ("take %2, %6, axis 0 : f32[%1, 1, 6, 2, 6]", "take"),
        ("reshape %2, [5] : f32[%1, 5]", "reshape"),
    ] {
        let t = text.replace(
            "  output r",
            &format!("  %9 = {bad}\n  output bad = %9\n  output r"),
        );
        let err = Graph::parse(&t).expect_err(bad).to_string();
        assert!(err.contains("%9 =") && err.contains(why), "{bad}: {err}");
    }
}

fn parse_error(text: &str) -> (usize, usize, String) {
    let e = Graph::parse(text).expect_err("should not parse");
    (e.line, e.column, e.message)
}

const HEADER: &str = "graph g {\n  %0 = input offsets : i64[B+1]\n  %1 = seqs %0 : seqs\n";

#[test]
fn parse_errors_carry_line_and_column() {
    // Unknown op.
    let (line, col, msg) = parse_error(&format!("{HEADER}  %2 = frobnicate %1 : f32[]\n}}"));
    assert_eq!((line, col), (4, 8), "{msg}");
    assert!(msg.contains("unknown op 'frobnicate'"), "{msg}");
    // Values out of order.
    let (line, col, msg) = parse_error(&format!("{HEADER}  %5 = input x : f32[%1]\n}}"));
    assert_eq!((line, col), (4, 3), "{msg}");
    assert!(msg.contains("expected %2"), "{msg}");
    // Unknown dtype.
    let (line, col, msg) = parse_error(&format!("{HEADER}  %2 = input x : f31[%1]\n}}"));
    assert_eq!((line, col), (4, 18), "{msg}");
    assert!(msg.contains("unknown dtype 'f31'"), "{msg}");
    // Missing comma.
    let (line, col, msg) = parse_error(&format!(
        "{HEADER}  %2 = input x : f32[%1]\n  %3 = add %2 %2 : f32[%1]\n}}"
    ));
    assert_eq!((line, col), (5, 15), "{msg}");
    assert!(msg.contains("expected ','"), "{msg}");
    // A value number too large to be a handle.
    let (line, col, msg) = parse_error("graph g {\n  output y = %4294967296\n}");
    assert_eq!((line, col), (2, 14), "{msg}");
    // Stray character.
    let (line, col, msg) = parse_error("graph g {\n  $\n}");
    assert_eq!((line, col), (2, 3), "{msg}");
    // Missing closing brace.
    let (line, _, msg) = parse_error(HEADER);
    assert_eq!(line, 4, "{msg}");
    assert!(msg.contains("end of input"), "{msg}");
    // Trailing text.
    let (line, col, _) = parse_error("graph g {\n}\nx");
    assert_eq!((line, col), (3, 1));
}

#[test]
fn written_types_are_checked() {
    let (line, col, msg) = parse_error(&format!(
        "{HEADER}  %2 = input x : f32[%1, 4]\n  %3 = exp %2 : f32[%1, 5]\n}}"
    ));
    assert_eq!((line, col), (5, 17), "{msg}");
    assert!(
        msg.contains("%3 is written as f32[%1, 5] but its type is f32[%1, 4]"),
        "{msg}"
    );
}

#[test]
fn validation_errors_point_at_the_node_line() {
    let (line, col, msg) = parse_error(&format!(
        "{HEADER}  %2 = input x : f32[%1, 4]\n  %3 = input y : f16[%1, 4]\n  %4 = add %2, %3 : f32[%1, 4]\n}}"
    ));
    assert_eq!((line, col), (6, 3), "{msg}");
    assert_eq!(msg, "%4 = add %2, %3: dtype mismatch: f32 vs f16");
    let (line, _, msg) = parse_error(&format!("{HEADER}  output y = %7\n}}"));
    assert_eq!(line, 4, "{msg}");
    assert!(msg.contains("output y = %7"), "{msg}");
}

/// Grows a random valid graph: each step proposes a node over random earlier
/// values and keeps it only if the graph still validates.
fn random_graph(choices: &[(u8, u8, u8, u8)]) -> Graph {
    let mut b = GraphBuilder::new("random");
    b.declare_attr("max_len", jagged_ir::AttrKind::Index, None);
    b.declare_attr(
        "alpha",
        jagged_ir::AttrKind::Float,
        Some(jagged_ir::AttrValue::Float(0.5)),
    );
    let o = b.input(
        "offsets",
        TensorType::new(DType::I32, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    b.input("x", TensorType::jagged(DType::F32, s, &[2]));
    b.input("y", TensorType::dense(DType::F32, &[Dim::Batch], &[2]));
    b.input(
        "z",
        TensorType::dense(DType::F32, &[Dim::Batch, Dim::MaxLen], &[2]),
    );
    b.input("n", TensorType::new(DType::I64, vec![Dim::Batch]));
    b.input("m", TensorType::jagged(DType::Bool, s, &[]));
    let mut last = None;
    for &(op, a, c, k) in choices {
        let valid_count = b.clone().finish().map(|g| g.nodes().len()).unwrap_or(0);
        let pick = |x: u8| jagged_ir::Handle::from_index(usize::from(x) % valid_count.max(1));
        let (a, c) = (pick(a), if k % 2 == 0 { pick(a) } else { pick(c) });
        let mut trial = b.clone();
        let axis = usize::from(k % 3);
        let h = match op % 14 {
            0 => trial.unary(UnaryOp::ALL[usize::from(k) % UnaryOp::ALL.len()], a),
            1 => trial.binary(BinaryOp::ALL[usize::from(k) % BinaryOp::ALL.len()], a, c),
            2 => trial.reduce(ReduceOp::ALL[usize::from(k) % 4], a, axis),
            3 => trial.softmax(a, axis),
            4 => trial.cast(a, DType::ALL[usize::from(k) % 8]),
            5 => trial.constant(f64::from(k) / 8.0 - 3.0, DType::F32),
            6 => trial.attr("alpha", DType::F32),
            7 => trial.contract(
                a,
                ["ih", "jh", "i", "h"][usize::from(k) % 4],
                c,
                "jh",
                ["ijh", "ih", "h", "ij"][usize::from(k) % 4],
                DType::F32,
            ),
            8 => {
                let pred = [
                    IndexPredicate::KeyNotAfterQuery,
                    IndexPredicate::KeyNotBeforeQuery,
                ][usize::from(k) % 2];
                trial.mask(
                    pred,
                    TensorType::new(DType::Bool, vec![Dim::Ragged(s), Dim::Ragged(s)]),
                )
            }
            9 => trial.select(a, c, c),
            10 => trial.to_padded(a),
            11 => trial.from_padded(a, s),
            12 => trial.scan(ScanMode::ALL[usize::from(k) % 3], a, axis),
            _ => {
                let w = trial.seqs_where(a);
                trial.compact(c, w)
            }
        };
        if trial.clone().finish().is_ok() {
            b = trial;
            last = Some(h);
        }
    }
    if let Some(h) = last {
        let mut with_output = b.clone();
        with_output.output("out", h);
        if with_output.clone().finish().is_ok() {
            b = with_output;
        }
    }
    b.finish().expect("kept only valid steps")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_graphs_round_trip(choices in prop::collection::vec(any::<(u8, u8, u8, u8)>(), 0..24)) {
        let g = random_graph(&choices);
        let text = g.to_string();
        if std::env::var("SHOW_RANDOM").is_ok() { println!("{text}"); }
        let back = Graph::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &g);
        prop_assert_eq!(&back.to_string(), &text);
        // The evaluator runs every valid graph without panicking.
        let f32s = |shape: Vec<usize>, n: usize| {
            jagged_ir::DenseTensor::from_f64(DType::F32, shape, &(0..n).map(|k| k as f64 * 0.25 - 1.0).collect::<Vec<_>>()).unwrap()
        };
        let offsets = jagged_ir::DenseTensor::new(vec![4], jagged_ir::TensorData::I32(vec![0, 0, 1, 5])).unwrap();
        let n = jagged_ir::DenseTensor::new(vec![3], jagged_ir::TensorData::I64(vec![0, 2, 1])).unwrap();
        let (x, y, z) = (f32s(vec![5, 2], 10), f32s(vec![3, 2], 6), f32s(vec![3, 3, 2], 18));
        let m = jagged_ir::DenseTensor::new(vec![5], jagged_ir::TensorData::Bool(vec![true, false, true, true, false])).unwrap();
        let inputs = [("offsets", &offsets), ("x", &x), ("y", &y), ("z", &z), ("n", &n), ("m", &m)];
        let attrs = [("max_len", jagged_ir::AttrValue::Index(3))];
        jagged_ir::evaluate(&g, &inputs, &attrs).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Corrupted text never panics the parser; whatever still parses round-trips.
    #[test]
    fn corrupted_text_is_an_error_or_a_valid_graph(
        which in 0usize..16,
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(&b"%[],:=-><+0123456789abijNB \n"[..])), 1..4),
    ) {
        let graphs = builtin_graphs();
        let mut text: Vec<u8> = graphs[which % graphs.len()].1.to_string().into_bytes();
        for (at, kind, byte) in edits {
            let k = at.index(text.len());
            match kind {
                0 => { text.remove(k); }
                1 => text.insert(k, byte),
                _ => text[k] = byte,
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        if let Ok(g) = Graph::parse(&text) {
            prop_assert_eq!(Graph::parse(&g.to_string()).ok(), Some(g));
        }
    }
}

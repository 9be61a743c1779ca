//! Origins: where each node came from, quoted by errors about it.

use jagged_ir::{DType, Dim, Graph, GraphBuilder, Origin, TensorType};

#[test]
fn parsed_nodes_carry_their_line() {
    let g = Graph::parse(
        "graph g {
  %0 = input a : f32[4]

  %1 = exp %0 : f32[4]
  output y = %1
}",
    )
    .expect("graph");
    let h = g.outputs()[0].value;
    assert_eq!(g.origin(h), Some(&Origin::Line(4)));
    assert_eq!(g.describe(h), "%1 = exp %0 (line 4)");
    // Provenance is not identity: the printed text parses back equal.
    assert_eq!(Graph::parse(&g.to_string()).expect("reparse"), g);
}

#[test]
fn validation_errors_quote_the_expression_a_node_came_from() {
    let mut b = GraphBuilder::new("k");
    let x = b.input("x", TensorType::new(DType::F32, vec![Dim::Static(4)]));
    let i = b.input("i", TensorType::new(DType::I32, vec![Dim::Static(4)]));
    let bad = b.add(x, i);
    b.set_origin(
        bad,
        Origin::Expr {
            text: "x + i".to_string(),
            file: "src/k.rs".to_string(),
            line: 12,
            column: 5,
        },
    );
    b.output("y", bad);
    let err = b.finish().expect_err("f32 + i32").to_string();
    assert!(err.contains("(`x + i` at src/k.rs:12:5)"), "{err}");
}

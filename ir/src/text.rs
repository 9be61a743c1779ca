//! The canonical text form of a graph ([`Display`](fmt::Display) for [`Graph`])
//! and its parser ([`Graph::parse`]).
//!
//! ```
//! use jagged_ir::{DType, ops};
//! let spec = ops::JaggedSpec { dtype: DType::F32, offsets: DType::I64, inner: vec![4] };
//! let graph = ops::jagged_softmax(&spec)?;
//! assert_eq!(graph.to_string(), "\
//! graph jagged_softmax {
//!   attr max_len: index
//!   %0 = input offsets : i64[B+1]
//!   %1 = seqs %0, max_len : seqs
//!   %2 = input values : f32[%1, 4]
//!   %3 = softmax %2, axis 0 : f32[%1, 4]
//!   output values = %3
//! }
//! ");
//! assert_eq!(jagged_ir::Graph::parse(&graph.to_string())?, graph);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The forms of a node line (`%k = ... : type`); the `Node` variants document
//! the semantics:
//!
//! | form | node |
//! |---|---|
//! | `input NAME` | [`Node::Input`] |
//! | `attr NAME` | [`Node::Attr`] |
//! | `const 0.5`, `const -inf` | [`Node::Const`] |
//! | `seqs %o`, `seqs %o, max_len` | [`Node::Seqs`] |
//! | `seqs_where %m` | [`Node::SeqsWhere`] |
//! | `offsets %s` | [`Node::Offsets`] |
//! | `neg`/`exp`/`log`/`silu`/`sqrt`/`rsqrt`/`abs`/`relu`/`sigmoid`/`tanh %x` | [`Node::Unary`] |
//! | `cast %x` | [`Node::Cast`] |
//! | `add`/`sub`/`mul`/`div`/`max`/`min %a, %b`, `pow %x, %scalar` | [`Node::Binary`] |
//! | `select %c, %a, %b` | [`Node::Select`] |
//! | `mask j <= i`, `mask j >= i`, `mask i < len(%s)` | [`Node::Mask`] |
//! | `reduce sum`/`max`/`mean`/`logsumexp`/`argmin`/`argmax %x, axis K` | [`Node::Reduce`] |
//! | `softmax %x, axis K` | [`Node::Softmax`] |
//! | `rank ascending`/`descending %x, axis K` | [`Node::Rank`] |
//! | `shift %x, axis K, by 1`, `... by -1` | [`Node::Shift`] |
//! | `topk indices`/`values ascending`/`descending %x, axis K, k 4` | [`Node::TopK`] |
//! | `take %x, %idx, axis K` | [`Node::Take`] |
//! | `reshape %x, [4, 16]` | [`Node::Reshape`] |
//! | `scan inclusive`/`exclusive`/`complete %x, axis K` | [`Node::Scan`] |
//! | `contract %a[ihd], %b[jhd] -> [ijh]`, `... -> [ijh], tf32` | [`Node::Contract`] |
//! | `to_padded %x` | [`Node::ToPadded`] |
//! | `from_padded %d, %s` | [`Node::FromPadded`] |
//! | `compact %x, %s` | [`Node::Compact`] |
//! | `seqs_triu %s` | [`Node::SeqsTriu`] |
//! | `pack_triu %x, %t` | [`Node::PackTriu`] |
//!
//! Types are `seqs` or `dtype[dims]` with dims `%s` (ragged), `B`, `B+1`, `N`
//! or an integer. A graph also has `attr NAME: index|float [= default]`
//! declarations and `output NAME = %k` lines.
//!
//! Every node line ends with the node's type; for `input`, `attr`, `const`,
//! `cast`, `offsets` and `mask` the type is part of the op, for the others the
//! parser checks it against the inferred one. The text is stable: it is what
//! [`Graph::canonical_hash`] hashes. Whitespace and line breaks are not
//! significant to the parser; errors carry line and column.

use std::fmt;
use std::str::FromStr;

use crate::arena::Handle;
use crate::builder::GraphBuilder;
use crate::dtype::DType;
use crate::graph::{
    AttrKind, AttrValue, BinaryOp, CompareOp, Dim, Graph, IndexPredicate, Node, Origin, Precision,
    RankOrder, ReduceOp, ScanMode, TensorType, TopKPart, Type, UnaryOp,
};

impl UnaryOp {
    /// Every unary op.
    pub const ALL: [UnaryOp; 10] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Silu,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Abs,
        UnaryOp::Relu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
    ];

    /// Its name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Silu => "silu",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Relu => "relu",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
        }
    }
}

impl BinaryOp {
    /// Every binary op.
    pub const ALL: [BinaryOp; 7] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Pow,
    ];

    /// Its name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Pow => "pow",
        }
    }
}

impl CompareOp {
    /// Every comparison.
    pub const ALL: [CompareOp; 6] = [
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Eq,
        CompareOp::Ne,
    ];

    /// Its name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
        }
    }
}

impl ReduceOp {
    /// Every reduction.
    pub const ALL: [ReduceOp; 6] = [
        ReduceOp::Sum,
        ReduceOp::Max,
        ReduceOp::Mean,
        ReduceOp::LogSumExp,
        ReduceOp::ArgMin,
        ReduceOp::ArgMax,
    ];

    /// Its name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Mean => "mean",
            ReduceOp::LogSumExp => "logsumexp",
            ReduceOp::ArgMin => "argmin",
            ReduceOp::ArgMax => "argmax",
        }
    }
}

impl ScanMode {
    /// Every scan mode.
    pub const ALL: [ScanMode; 3] = [ScanMode::Inclusive, ScanMode::Exclusive, ScanMode::Complete];

    /// Its name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            ScanMode::Inclusive => "inclusive",
            ScanMode::Exclusive => "exclusive",
            ScanMode::Complete => "complete",
        }
    }
}

impl RankOrder {
    /// Both orders.
    pub const ALL: [RankOrder; 2] = [RankOrder::Ascending, RankOrder::Descending];

    /// Its name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            RankOrder::Ascending => "ascending",
            RankOrder::Descending => "descending",
        }
    }
}

impl TopKPart {
    /// Both parts.
    pub const ALL: [TopKPart; 2] = [TopKPart::Indices, TopKPart::Values];

    /// Its name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            TopKPart::Indices => "indices",
            TopKPart::Values => "values",
        }
    }
}

impl AttrKind {
    /// Its name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            AttrKind::Index => "index",
            AttrKind::Float => "float",
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Index(n) => write!(f, "{n}"),
            AttrValue::Float(x) => write!(f, "{x:?}"),
        }
    }
}

impl fmt::Display for IndexPredicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexPredicate::KeyNotAfterQuery => f.write_str("j <= i"),
            IndexPredicate::KeyNotBeforeQuery => f.write_str("j >= i"),
            IndexPredicate::RowInSequence(s) => write!(f, "i < len({s})"),
        }
    }
}

/// Writes the op part of a node (`add %1, %2`), without its result or type.
fn write_op(f: &mut fmt::Formatter<'_>, node: &Node) -> fmt::Result {
    match node {
        Node::Input { name, .. } => write!(f, "input {name}"),
        Node::Attr { name, .. } => write!(f, "attr {name}"),
        Node::Const { value, .. } => write!(f, "const {value:?}"),
        Node::Seqs { offsets, truncate } => {
            write!(f, "seqs {offsets}")?;
            if *truncate {
                f.write_str(", max_len")?;
            }
            Ok(())
        }
        Node::SeqsWhere { mask } => write!(f, "seqs_where {mask}"),
        Node::SeqsTriu { seqs } => write!(f, "seqs_triu {seqs}"),
        Node::Offsets { seqs, .. } => write!(f, "offsets {seqs}"),
        Node::Unary { op, arg } => write!(f, "{} {arg}", op.name()),
        Node::Cast { arg, .. } => write!(f, "cast {arg}"),
        Node::Binary { op, lhs, rhs } => write!(f, "{} {lhs}, {rhs}", op.name()),
        Node::Select {
            cond,
            on_true,
            on_false,
        } => write!(f, "select {cond}, {on_true}, {on_false}"),
        Node::Mask { pred, .. } => write!(f, "mask {pred}"),
        Node::Compare { op, lhs, rhs } => write!(f, "{} {lhs}, {rhs}", op.name()),
        Node::Position { axis, .. } => write!(f, "position axis {axis}"),
        Node::Lengths { seqs, .. } => write!(f, "lengths {seqs}"),
        Node::Gather { table, index } => write!(f, "gather {table}, {index}"),
        Node::Reduce { op, arg, axis } => write!(f, "reduce {} {arg}, axis {axis}", op.name()),
        Node::Softmax { arg, axis } => write!(f, "softmax {arg}, axis {axis}"),
        Node::Rank { order, arg, axis } => {
            write!(f, "rank {} {arg}, axis {axis}", order.name())
        }
        Node::Shift { arg, axis, by } => write!(f, "shift {arg}, axis {axis}, by {by}"),
        Node::Take { arg, index, axis } => write!(f, "take {arg}, {index}, axis {axis}"),
        Node::Reshape { arg, inner } => {
            let dims: Vec<String> = inner.iter().map(|d| d.to_string()).collect();
            write!(f, "reshape {arg}, [{}]", dims.join(", "))
        }
        Node::TopK {
            order,
            part,
            arg,
            axis,
            k,
        } => write!(
            f,
            "topk {} {} {arg}, axis {axis}, k {k}",
            part.name(),
            order.name()
        ),
        Node::Scan { mode, arg, axis } => write!(f, "scan {} {arg}, axis {axis}", mode.name()),
        Node::Contract {
            lhs,
            lhs_axes,
            rhs,
            rhs_axes,
            out_axes,
            precision,
            ..
        } => {
            write!(
                f,
                "contract {lhs}[{lhs_axes}], {rhs}[{rhs_axes}] -> [{out_axes}]"
            )?;
            match precision {
                Precision::Full => Ok(()),
                Precision::Tf32 => write!(f, ", tf32"),
            }
        }
        Node::ToPadded { arg } => write!(f, "to_padded {arg}"),
        Node::FromPadded { arg, seqs } => write!(f, "from_padded {arg}, {seqs}"),
        Node::Compact { arg, seqs } => write!(f, "compact {arg}, {seqs}"),
        Node::PackTriu { arg, seqs } => write!(f, "pack_triu {arg}, {seqs}"),
    }
}

/// `%3 = add %1, %2`: a node without its type, as error messages quote it.
pub fn node_text(handle: Handle<Node>, node: &Node) -> String {
    struct Op<'a>(&'a Node);
    impl fmt::Display for Op<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_op(f, self.0)
        }
    }
    format!("{handle} = {}", Op(node))
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph {} {{", self.name)?;
        for a in &self.attrs {
            write!(f, "  attr {}: {}", a.name, a.kind.name())?;
            if let Some(d) = a.default {
                write!(f, " = {d}")?;
            }
            writeln!(f)?;
        }
        for (h, node) in self.nodes.iter() {
            write!(f, "  {h} = ")?;
            write_op(f, node)?;
            writeln!(f, " : {}", self.type_of(h))?;
        }
        for out in &self.outputs {
            writeln!(f, "  output {} = {}", out.name, out.value)?;
        }
        writeln!(f, "}}")
    }
}

/// A syntax or type error in graph text, at a line and column (1-based).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    /// The line.
    pub line: usize,
    /// The column (in characters).
    pub column: usize,
    /// What is wrong (for a type error, the validator's message).
    pub message: String,
}

impl Graph {
    /// Parses the canonical text form back into a validated graph.
    pub fn parse(text: &str) -> Result<Graph, ParseError> {
        Parser::new(text)?.graph()
    }
}

impl FromStr for Graph {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Graph, ParseError> {
        Graph::parse(text)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Value(usize),
    Number(String),
    Punct(&'static str),
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) | Tok::Number(s) => write!(f, "'{s}'"),
            Tok::Value(n) => write!(f, "'%{n}'"),
            Tok::Punct(p) => write!(f, "'{p}'"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Pos {
    line: usize,
    column: usize,
}

fn lex(text: &str) -> Result<Vec<(Tok, Pos)>, ParseError> {
    const PUNCT: [&str; 15] = [
        "->", "<=", ">=", "{", "}", "[", "]", "(", ")", ",", ":", "=", "<", "+", "-",
    ];
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let (mut k, mut line, mut column) = (0, 1, 1);
    let take = |k: &mut usize, column: &mut usize, pred: &dyn Fn(char, char) -> bool| {
        let start = *k;
        while *k < chars.len() && pred(chars[*k], if *k > 0 { chars[*k - 1] } else { ' ' }) {
            *k += 1;
            *column += 1;
        }
        chars[start..*k].iter().collect::<String>()
    };
    while k < chars.len() {
        let c = chars[k];
        let pos = Pos { line, column };
        if c == '\n' {
            k += 1;
            line += 1;
            column = 1;
        } else if c.is_whitespace() {
            k += 1;
            column += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let s = take(&mut k, &mut column, &|c, _| {
                c.is_ascii_alphanumeric() || c == '_'
            });
            toks.push((Tok::Ident(s), pos));
        } else if c.is_ascii_digit() {
            let s = take(&mut k, &mut column, &|c, prev| {
                c.is_ascii_alphanumeric()
                    || c == '.'
                    || c == '_'
                    || ((c == '-' || c == '+') && (prev == 'e' || prev == 'E'))
            });
            toks.push((Tok::Number(s), pos));
        } else if c == '%' {
            k += 1;
            column += 1;
            let digits = take(&mut k, &mut column, &|c, _| c.is_ascii_digit());
            // Handles index arenas with u32: larger numbers cannot name a value.
            let n: u32 = digits.parse().map_err(|_| ParseError {
                line: pos.line,
                column: pos.column,
                message: format!("expected a value number (at most {}) after '%'", u32::MAX),
            })?;
            toks.push((Tok::Value(n as usize), pos));
        } else if let Some(p) = PUNCT
            .iter()
            .find(|p| p.chars().zip(&chars[k..]).filter(|(a, b)| a == *b).count() == p.len())
        {
            k += p.len();
            column += p.len();
            toks.push((Tok::Punct(p), pos));
        } else {
            return Err(ParseError {
                line,
                column,
                message: format!("unexpected character '{c}'"),
            });
        }
    }
    toks.push((Tok::Eof, Pos { line, column }));
    Ok(toks)
}

struct Parser {
    toks: Vec<(Tok, Pos)>,
    at: usize,
}

type PResult<T> = Result<T, ParseError>;

impl Parser {
    fn new(text: &str) -> PResult<Self> {
        Ok(Parser {
            toks: lex(text)?,
            at: 0,
        })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    fn pos(&self) -> Pos {
        self.toks[self.at].1
    }

    fn next(&mut self) -> Tok {
        let tok = self.toks[self.at].0.clone();
        if tok != Tok::Eof {
            self.at += 1;
        }
        tok
    }

    fn error_at<T>(&self, pos: Pos, message: String) -> PResult<T> {
        Err(ParseError {
            line: pos.line,
            column: pos.column,
            message,
        })
    }

    fn expected<T>(&self, what: &str) -> PResult<T> {
        self.error_at(
            self.pos(),
            format!("expected {what}, found {}", self.peek()),
        )
    }

    fn punct(&mut self, p: &str) -> PResult<()> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            self.expected(&format!("'{p}'"))
        }
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let found = matches!(self.peek(), Tok::Punct(q) if *q == p);
        if found {
            self.next();
        }
        found
    }

    fn ident(&mut self) -> PResult<String> {
        match self.peek() {
            Tok::Ident(s) => {
                let s = s.clone();
                self.next();
                Ok(s)
            }
            _ => self.expected("a name"),
        }
    }

    fn keyword(&mut self, word: &str) -> PResult<()> {
        match self.peek() {
            Tok::Ident(s) if s == word => {
                self.next();
                Ok(())
            }
            _ => self.expected(&format!("'{word}'")),
        }
    }

    fn value(&mut self) -> PResult<Handle<Node>> {
        match self.peek() {
            Tok::Value(n) => {
                let h = Handle::from_index(*n);
                self.next();
                Ok(h)
            }
            _ => self.expected("a value like %3"),
        }
    }

    fn number<T: FromStr>(&mut self, what: &str) -> PResult<T> {
        let pos = self.pos();
        match self.next() {
            Tok::Number(s) => s
                .parse()
                .or_else(|_| self.error_at(pos, format!("bad {what} '{s}'"))),
            tok => self.error_at(pos, format!("expected {what}, found {tok}")),
        }
    }

    /// A real number: optional `-`, then digits, `inf` or `NaN`.
    fn real(&mut self) -> PResult<f64> {
        let pos = self.pos();
        let sign = if self.eat_punct("-") { "-" } else { "" };
        let body = match self.next() {
            Tok::Number(s) | Tok::Ident(s) => s,
            tok => return self.error_at(pos, format!("expected a number, found {tok}")),
        };
        format!("{sign}{body}")
            .parse()
            .or_else(|_| self.error_at(pos, format!("bad number '{sign}{body}'")))
    }

    fn axis(&mut self) -> PResult<usize> {
        self.punct(",")?;
        self.keyword("axis")?;
        self.number("an axis number")
    }

    fn name_of<T: Copy>(
        &mut self,
        all: &[T],
        name: fn(T) -> &'static str,
        what: &str,
    ) -> PResult<T> {
        let pos = self.pos();
        let word = self.ident()?;
        all.iter().copied().find(|&x| name(x) == word).map_or_else(
            || self.error_at(pos, format!("unknown {what} '{word}'")),
            Ok,
        )
    }

    fn ty(&mut self) -> PResult<Type> {
        let pos = self.pos();
        let word = self.ident()?;
        if word == "seqs" {
            return Ok(Type::Seqs);
        }
        let Some(dtype) = DType::from_name(&word) else {
            return self.error_at(pos, format!("unknown dtype '{word}'"));
        };
        self.punct("[")?;
        let mut dims = Vec::new();
        while !self.eat_punct("]") {
            if !dims.is_empty() {
                self.punct(",")?;
            }
            let dim = match self.peek().clone() {
                Tok::Value(_) => Dim::Ragged(self.value()?),
                Tok::Number(_) => Dim::Static(self.number("a dim")?),
                Tok::Ident(s) if s == "N" => {
                    self.next();
                    Dim::MaxLen
                }
                Tok::Ident(s) if s == "B" => {
                    self.next();
                    if self.eat_punct("+") {
                        let one_at = self.pos();
                        if self.number::<usize>("1")? != 1 {
                            return self.error_at(one_at, "only B+1 is allowed".to_string());
                        }
                        Dim::BatchPlusOne
                    } else {
                        Dim::Batch
                    }
                }
                _ => return self.expected("a dim (%s, B, B+1, N or a number)"),
            };
            dims.push(dim);
        }
        Ok(Type::Tensor(TensorType::new(dtype, dims)))
    }

    fn tensor_ty(&mut self) -> PResult<TensorType> {
        let pos = self.pos();
        match self.ty()? {
            Type::Tensor(t) => Ok(t),
            Type::Seqs => self.error_at(pos, "expected a tensor type".to_string()),
        }
    }

    fn letters(&mut self) -> PResult<String> {
        self.punct("[")?;
        let letters = match self.peek() {
            Tok::Ident(_) => self.ident()?,
            _ => String::new(),
        };
        self.punct("]")?;
        Ok(letters)
    }

    fn predicate(&mut self) -> PResult<IndexPredicate> {
        let pos = self.pos();
        let first = self.ident()?;
        match first.as_str() {
            "j" => {
                let pred = if self.eat_punct("<=") {
                    IndexPredicate::KeyNotAfterQuery
                } else if self.eat_punct(">=") {
                    IndexPredicate::KeyNotBeforeQuery
                } else {
                    return self.expected("'<=' or '>='");
                };
                self.keyword("i")?;
                Ok(pred)
            }
            "i" => {
                self.punct("<")?;
                self.keyword("len")?;
                self.punct("(")?;
                let s = self.value()?;
                self.punct(")")?;
                Ok(IndexPredicate::RowInSequence(s))
            }
            _ => self.error_at(pos, format!("unknown predicate starting with '{first}'")),
        }
    }

    /// The op of a node line, up to its type; `ty` is the type written after it.
    fn op(&mut self, ty_slot: &mut Option<(Pos, Type)>) -> PResult<Node> {
        let op_pos = self.pos();
        let op = self.ident()?;
        // Ops whose type is part of the op read it first, then build the node.
        let typed = |p: &mut Self, slot: &mut Option<(Pos, Type)>| -> PResult<TensorType> {
            p.punct(":")?;
            let pos = p.pos();
            let t = p.tensor_ty()?;
            *slot = Some((pos, Type::Tensor(t.clone())));
            Ok(t)
        };
        let node = match op.as_str() {
            "input" => {
                let name = self.ident()?;
                let ty = typed(self, ty_slot)?;
                Node::Input { name, ty }
            }
            "attr" => {
                let name = self.ident()?;
                let dtype = typed(self, ty_slot)?.dtype;
                Node::Attr { name, dtype }
            }
            "const" => {
                let value = self.real()?;
                let dtype = typed(self, ty_slot)?.dtype;
                Node::Const { value, dtype }
            }
            "cast" => {
                let arg = self.value()?;
                let dtype = typed(self, ty_slot)?.dtype;
                Node::Cast { arg, dtype }
            }
            "offsets" => {
                let seqs = self.value()?;
                let dtype = typed(self, ty_slot)?.dtype;
                Node::Offsets { seqs, dtype }
            }
            "mask" => {
                let pred = self.predicate()?;
                let ty = typed(self, ty_slot)?;
                Node::Mask { pred, ty }
            }
            "position" => {
                self.keyword("axis")?;
                let axis = self.number("an axis number")?;
                let ty = typed(self, ty_slot)?;
                Node::Position { axis, ty }
            }
            "lengths" => {
                let seqs = self.value()?;
                let dtype = typed(self, ty_slot)?.dtype;
                Node::Lengths { seqs, dtype }
            }
            "gather" => {
                let table = self.value()?;
                self.punct(",")?;
                let index = self.value()?;
                Node::Gather { table, index }
            }
            "seqs" => {
                let offsets = self.value()?;
                let truncate = self.eat_punct(",");
                if truncate {
                    self.keyword("max_len")?;
                }
                Node::Seqs { offsets, truncate }
            }
            "seqs_where" => Node::SeqsWhere {
                mask: self.value()?,
            },
            "seqs_triu" => Node::SeqsTriu {
                seqs: self.value()?,
            },
            "select" => {
                let cond = self.value()?;
                self.punct(",")?;
                let on_true = self.value()?;
                self.punct(",")?;
                let on_false = self.value()?;
                Node::Select {
                    cond,
                    on_true,
                    on_false,
                }
            }
            "reduce" => {
                let op = self.name_of(&ReduceOp::ALL, ReduceOp::name, "reduction")?;
                let arg = self.value()?;
                let axis = self.axis()?;
                Node::Reduce { op, arg, axis }
            }
            "softmax" => {
                let arg = self.value()?;
                let axis = self.axis()?;
                Node::Softmax { arg, axis }
            }
            "rank" => {
                let order = self.name_of(&RankOrder::ALL, RankOrder::name, "rank order")?;
                let arg = self.value()?;
                let axis = self.axis()?;
                Node::Rank { order, arg, axis }
            }
            "topk" => {
                let part = self.name_of(&TopKPart::ALL, TopKPart::name, "topk part")?;
                let order = self.name_of(&RankOrder::ALL, RankOrder::name, "rank order")?;
                let arg = self.value()?;
                let axis = self.axis()?;
                self.punct(",")?;
                self.keyword("k")?;
                let k = self.number("a count")?;
                Node::TopK {
                    order,
                    part,
                    arg,
                    axis,
                    k,
                }
            }
            "take" => {
                let arg = self.value()?;
                self.punct(",")?;
                let index = self.value()?;
                let axis = self.axis()?;
                Node::Take { arg, index, axis }
            }
            "reshape" => {
                let arg = self.value()?;
                self.punct(",")?;
                self.punct("[")?;
                let mut inner = Vec::new();
                while !self.eat_punct("]") {
                    if !inner.is_empty() {
                        self.punct(",")?;
                    }
                    inner.push(self.number("a dim")?);
                }
                Node::Reshape { arg, inner }
            }
            "shift" => {
                let arg = self.value()?;
                let axis = self.axis()?;
                self.punct(",")?;
                self.keyword("by")?;
                let negative = self.eat_punct("-");
                let rows: i64 = self.number("a row count")?;
                let by = if negative { -rows } else { rows };
                Node::Shift { arg, axis, by }
            }
            "scan" => {
                let mode = self.name_of(&ScanMode::ALL, ScanMode::name, "scan mode")?;
                let arg = self.value()?;
                let axis = self.axis()?;
                Node::Scan { mode, arg, axis }
            }
            "contract" => {
                let lhs = self.value()?;
                let lhs_axes = self.letters()?;
                self.punct(",")?;
                let rhs = self.value()?;
                let rhs_axes = self.letters()?;
                self.punct("->")?;
                let out_axes = self.letters()?;
                let precision = if self.eat_punct(",") {
                    self.keyword("tf32")?;
                    Precision::Tf32
                } else {
                    Precision::Full
                };
                let dtype = typed(self, ty_slot)?.dtype;
                Node::Contract {
                    lhs,
                    lhs_axes,
                    rhs,
                    rhs_axes,
                    out_axes,
                    dtype,
                    precision,
                }
            }
            "to_padded" => Node::ToPadded { arg: self.value()? },
            "from_padded" | "compact" | "pack_triu" => {
                let arg = self.value()?;
                self.punct(",")?;
                let seqs = self.value()?;
                match op.as_str() {
                    "compact" => Node::Compact { arg, seqs },
                    "pack_triu" => Node::PackTriu { arg, seqs },
                    _ => Node::FromPadded { arg, seqs },
                }
            }
            _ => {
                if let Some(op) = UnaryOp::ALL.into_iter().find(|u| u.name() == op) {
                    Node::Unary {
                        op,
                        arg: self.value()?,
                    }
                } else if let Some(op) = BinaryOp::ALL.into_iter().find(|b| b.name() == op) {
                    let lhs = self.value()?;
                    self.punct(",")?;
                    let rhs = self.value()?;
                    Node::Binary { op, lhs, rhs }
                } else if let Some(op) = CompareOp::ALL.into_iter().find(|c| c.name() == op) {
                    let lhs = self.value()?;
                    self.punct(",")?;
                    let rhs = self.value()?;
                    Node::Compare { op, lhs, rhs }
                } else {
                    return self.error_at(op_pos, format!("unknown op '{op}'"));
                }
            }
        };
        if ty_slot.is_none() {
            self.punct(":")?;
            let pos = self.pos();
            *ty_slot = Some((pos, self.ty()?));
        }
        Ok(node)
    }

    fn graph(mut self) -> PResult<Graph> {
        self.keyword("graph")?;
        let name = self.ident()?;
        self.punct("{")?;
        let mut b = GraphBuilder::new(name);
        let mut lines: Vec<(Pos, Pos, Type)> = Vec::new();
        let mut output_lines = Vec::new();
        loop {
            let pos = self.pos();
            match self.peek().clone() {
                Tok::Punct("}") => {
                    self.next();
                    break;
                }
                Tok::Ident(w) if w == "attr" => {
                    self.next();
                    let name = self.ident()?;
                    self.punct(":")?;
                    let kind = self.name_of(
                        &[AttrKind::Index, AttrKind::Float],
                        AttrKind::name,
                        "attribute kind",
                    )?;
                    let default = if self.eat_punct("=") {
                        Some(match kind {
                            AttrKind::Index => AttrValue::Index(self.number("an index")?),
                            AttrKind::Float => AttrValue::Float(self.real()?),
                        })
                    } else {
                        None
                    };
                    b.declare_attr(name, kind, default);
                }
                Tok::Ident(w) if w == "output" => {
                    self.next();
                    let name = self.ident()?;
                    self.punct("=")?;
                    output_lines.push((name.clone(), pos));
                    b.output(name, self.value()?);
                }
                Tok::Value(n) => {
                    if n != lines.len() {
                        return self.error_at(
                            pos,
                            format!("expected %{} (values are numbered in order)", lines.len()),
                        );
                    }
                    self.next();
                    self.punct("=")?;
                    let mut slot = None;
                    let node = self.op(&mut slot)?;
                    let Some((ty_pos, ty)) = slot else {
                        return self.expected("a type");
                    };
                    lines.push((pos, ty_pos, ty));
                    b.push(node);
                }
                _ => return self.expected("'attr', '%N = ...', 'output' or '}'"),
            }
        }
        if *self.peek() != Tok::Eof {
            return self.expected("end of input");
        }
        let mut graph = b.finish().map_err(|e| {
            let start = Pos { line: 1, column: 1 };
            let output = output_lines
                .iter()
                .find(|(name, _)| e.context.starts_with(&format!("output {name} =")));
            let pos = match (output, e.node) {
                (Some((_, pos)), _) => *pos,
                (None, Some(h)) => lines.get(h.index()).map_or(start, |l| l.0),
                (None, None) => start,
            };
            ParseError {
                line: pos.line,
                column: pos.column,
                message: e.to_string(),
            }
        })?;
        for (k, (_, ty_pos, written)) in lines.iter().enumerate() {
            let inferred = graph.type_of(Handle::from_index(k));
            if written != inferred {
                return self.error_at(
                    *ty_pos,
                    format!("%{k} is written as {written} but its type is {inferred}"),
                );
            }
        }
        // Parse errors carry the line already; later errors (code
        // generation) quote it through the origins.
        for (k, (pos, _, _)) in lines.iter().enumerate() {
            graph
                .origins
                .set(Handle::from_index(k), Origin::Line(pos.line));
        }
        Ok(graph)
    }
}

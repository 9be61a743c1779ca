//! Selection on static attributes inside the body: `if causal { .. } else
//! { .. }` on a `#[attr(static)]` bool, `match activation { E::A => .., .. }`
//! on a static enum, blocks with their own `let`s, and the kernel's last
//! expression, whose outputs may be `Some(x)` / `None` for outputs declared
//! `Option<..>`. The arm of the combination being lowered (see `statics`)
//! builds the graph; every other arm is lowered too, on a copy of the
//! lowering that is then dropped, so that it is checked like the rest of the
//! body, and every arm must give what the first one gives (kind, dtype and
//! shape; the number of outputs, and which are `Some`/`None`, for the last
//! expression): an error at the arm that differs.

use syn::{Expr, Stmt};

use super::{Lowering, Value, err_on};
use crate::statics::{StaticVal, arm_variants, variant_name};

/// One output of the kernel's last expression.
pub(crate) struct TailItem<'b> {
    /// Its value; `None` for `None` (an optional output left out).
    pub value: Option<Value>,
    /// Whether it was written `Some(x)` or `None`.
    pub optional: bool,
    /// The expression.
    pub expr: &'b Expr,
}

/// The body of one arm of a static `if` or `match`.
#[derive(Clone, Copy)]
enum Arm<'b> {
    Block(&'b syn::Block),
    Expr(&'b Expr),
}

const NOT_STATIC: &str = "`if` and `match` are not part of the jagged DSL, but on a static \
     attribute (`#[attr(static)] causal: bool`): choose elementwise with `select(cond, a, b)`";

impl Lowering<'_> {
    /// The static attribute `e` names (a path to a name that no `let` shadows).
    fn static_of(&self, e: &Expr) -> Option<(String, StaticVal)> {
        let e = match e {
            Expr::Paren(p) => &*p.expr,
            Expr::Group(g) => &*g.expr,
            other => other,
        };
        let Expr::Path(p) = e else { return None };
        let name = p.path.get_ident()?.to_string();
        if self.env.contains_key(&name) {
            return None;
        }
        self.statics.get(&name).map(|v| (name, v.clone()))
    }

    /// The arms of a static `if` or `match` and the index of the one taken.
    fn arms<'b>(&self, e: &'b Expr) -> syn::Result<(Vec<Arm<'b>>, usize)> {
        match e {
            Expr::If(i) => {
                let (cond, negated) = match &*i.cond {
                    Expr::Unary(u) if matches!(u.op, syn::UnOp::Not(_)) => (&*u.expr, true),
                    other => (other, false),
                };
                let value = match self.static_of(cond) {
                    Some((_, StaticVal::Bool(b))) => b != negated,
                    Some((name, _)) => {
                        return err_on(
                            &i.cond,
                            format!(
                                "`{name}` is a static enum: select with `match {name} {{ .. }}`"
                            ),
                        );
                    }
                    None => return err_on(e, NOT_STATIC),
                };
                let Some((_, other)) = &i.else_branch else {
                    return err_on(
                        e,
                        "an `if` on a static attribute needs an `else`: both give a value",
                    );
                };
                let arms = vec![Arm::Block(&i.then_branch), Arm::Expr(other)];
                Ok((arms, if value { 0 } else { 1 }))
            }
            Expr::Match(m) => {
                let value = match self.static_of(&m.expr) {
                    Some((_, v @ (StaticVal::Variant(_) | StaticVal::Any))) => v,
                    Some((name, StaticVal::Bool(_))) => {
                        return err_on(
                            &m.expr,
                            format!(
                                "`{name}` is a static bool: select with `if {name} {{ .. }} else {{ .. }}`"
                            ),
                        );
                    }
                    None => return err_on(e, NOT_STATIC),
                };
                let mut chosen = None;
                let mut arms = Vec::new();
                for (k, arm) in m.arms.iter().enumerate() {
                    if let Some((_, guard)) = &arm.guard {
                        return err_on(guard, "a `match` on a static attribute takes no guards");
                    }
                    let names: Vec<String> =
                        arm_variants(&arm.pat)?.iter().map(variant_name).collect();
                    let hit = match &value {
                        StaticVal::Variant(v) => names.contains(v),
                        _ => k == 0,
                    };
                    if hit && chosen.is_none() {
                        chosen = Some(k);
                    }
                    arms.push(Arm::Expr(&arm.body));
                }
                match chosen {
                    Some(k) => Ok((arms, k)),
                    None => err_on(e, "this `match` has no arm for the value being lowered"),
                }
            }
            _ => err_on(e, NOT_STATIC),
        }
    }

    /// A static `if` or `match` as a value. Every arm is compared with the
    /// first one (in source order): an error at the arm that differs.
    pub(super) fn static_branch(&mut self, e: &Expr) -> syn::Result<Value> {
        let (arms, taken) = self.arms(e)?;
        let value = self.arm_value(arms[taken])?;
        let first = if taken == 0 {
            value.clone()
        } else {
            self.clone().arm_value(arms[0])?
        };
        for (k, &arm) in arms.iter().enumerate().skip(1) {
            let other = if k == taken {
                value.clone()
            } else {
                self.clone().arm_value(arm)?
            };
            if let Some(why) = differ(&first, &other) {
                return err_on(&arm_tokens(arm), branch_message(e, why));
            }
        }
        Ok(value)
    }

    fn arm_value(&mut self, arm: Arm<'_>) -> syn::Result<Value> {
        match arm {
            Arm::Block(b) => self.block_value(b),
            Arm::Expr(e) => self.expr(e),
        }
    }

    /// The `let`s of a block (scoped to it) and the block's last expression.
    fn scoped<'b, T>(
        &mut self,
        b: &'b syn::Block,
        last: impl FnOnce(&mut Self, &'b Expr) -> syn::Result<T>,
    ) -> syn::Result<T> {
        let Some((Stmt::Expr(tail, None), init)) = b.stmts.split_last() else {
            return err_on(b, "a block in a kernel ends with an expression, its value");
        };
        let saved = self.env.clone();
        for stmt in init {
            match stmt {
                Stmt::Local(local) => self.local(local)?,
                other => {
                    return err_on(other, "a block in a kernel holds `let`s, then its value");
                }
            }
        }
        let value = last(self, tail);
        self.env = saved;
        value
    }

    /// `{ let a = ..; a * 2.0 }` as a value; its `let`s end with it.
    pub(super) fn block_value(&mut self, b: &syn::Block) -> syn::Result<Value> {
        self.scoped(b, |l, tail| l.expr(tail))
    }

    /// The kernel's last expression: a tuple (one element per output), one
    /// output, or a static `if`/`match` (or a block) giving either.
    pub(super) fn tail<'b>(&mut self, e: &'b Expr) -> syn::Result<Vec<TailItem<'b>>> {
        match e {
            Expr::Paren(p) => self.tail(&p.expr),
            Expr::Block(b) if b.label.is_none() => self.scoped(&b.block, |l, t| l.tail(t)),
            Expr::If(_) | Expr::Match(_) => {
                let (arms, taken) = self.arms(e)?;
                let mut all = Vec::new();
                for (k, &arm) in arms.iter().enumerate() {
                    if k != taken {
                        all.push(self.clone().arm_tail(arm)?);
                    } else {
                        all.push(Vec::new());
                    }
                }
                // The arm taken builds the graph, in `self`.
                let items = self.arm_tail(arms[taken])?;
                let view = |k: usize| if k == taken { &items } else { &all[k] };
                let first = view(0);
                for (k, &arm) in arms.iter().enumerate().skip(1) {
                    let other = view(k);
                    if other.len() != first.len() {
                        return err_on(
                            &arm_tokens(arm),
                            branch_message(
                                e,
                                format!(
                                    "the first arm gives {} output(s), this one {}",
                                    first.len(),
                                    other.len()
                                ),
                            ),
                        );
                    }
                    for (a, b) in first.iter().zip(other) {
                        let why = match (&a.value, &b.value) {
                            _ if a.optional != b.optional => Some(
                                "`Some`/`None` in the first arm, a plain value in this one, or \
                                 the other way round"
                                    .to_string(),
                            ),
                            (Some(x), Some(y)) => differ(x, y),
                            _ => None,
                        };
                        if let Some(why) = why {
                            return err_on(b.expr, branch_message(e, why));
                        }
                    }
                }
                Ok(items)
            }
            Expr::Tuple(t) => t.elems.iter().map(|e| self.tail_item(e)).collect(),
            other => Ok(vec![self.tail_item(other)?]),
        }
    }

    fn arm_tail<'b>(&mut self, arm: Arm<'b>) -> syn::Result<Vec<TailItem<'b>>> {
        match arm {
            Arm::Block(b) => self.scoped(b, |l, t| l.tail(t)),
            Arm::Expr(e) => self.tail(e),
        }
    }

    /// One output: a value, `Some(value)` or `None`.
    fn tail_item<'b>(&mut self, e: &'b Expr) -> syn::Result<TailItem<'b>> {
        match e {
            Expr::Path(p) if p.path.is_ident("None") && !self.env.contains_key("None") => {
                Ok(TailItem {
                    value: None,
                    optional: true,
                    expr: e,
                })
            }
            Expr::Call(c)
                if matches!(&*c.func, Expr::Path(p) if p.path.is_ident("Some"))
                    && c.args.len() == 1 =>
            {
                Ok(TailItem {
                    value: Some(self.expr(&c.args[0])?),
                    optional: true,
                    expr: &c.args[0],
                })
            }
            _ => Ok(TailItem {
                value: Some(self.expr(e)?),
                optional: false,
                expr: e,
            }),
        }
    }
}

/// The tokens of an arm, for an error covering it.
fn arm_tokens(arm: Arm<'_>) -> proc_macro2::TokenStream {
    match arm {
        Arm::Block(b) => quote::ToTokens::to_token_stream(b),
        Arm::Expr(e) => quote::ToTokens::to_token_stream(e),
    }
}

/// Why two arms' values differ, if they do: kind, dtype or shape.
fn differ(a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Scalar(_), Value::Scalar(_)) => None,
        (Value::Tensor(x), Value::Tensor(y)) => {
            (x.kind != y.kind || x.dtype != y.dtype || x.shape != y.shape).then(|| {
                format!(
                    "the first arm gives {} but this one gives {}",
                    x.describe(),
                    y.describe()
                )
            })
        }
        (Value::Tensor(x), Value::Scalar(_)) => Some(format!(
            "the first arm gives {} but this one gives a scalar",
            x.describe()
        )),
        (Value::Scalar(_), Value::Tensor(y)) => Some(format!(
            "the first arm gives a scalar but this one gives {}",
            y.describe()
        )),
    }
}

fn branch_message(e: &Expr, why: String) -> String {
    let what = if matches!(e, Expr::If(_)) {
        "if"
    } else {
        "match"
    };
    format!(
        "the arms of this static `{what}` differ: {why} (every arm gives the same kind, dtype and shape)"
    )
}

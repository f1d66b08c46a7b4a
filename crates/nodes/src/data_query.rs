//! The subset of pandas' `DataFrame.query` that `nodetool.data.Filter` and `FindRow` accept:
//! column names (bare, or in backticks when they have spaces), numbers, quoted strings, lists,
//! `True`/`False`/`None`, `+ - * / // %`, comparisons (`== != < <= > >=`, chained as
//! `100 <= price <= 200`), `in`/`not in`, `and`/`or`/`not` (and `&`/`|`/`~`, which pandas gives
//! the same meaning in queries) and parentheses. Anything else — method calls, `@variables`,
//! attribute access — is refused with an error naming what is not supported.

use serde_json::Value;

use nodetool_core::{Error, Result};

/// The longest condition accepted, and the deepest nesting.
const MAX_LEN: usize = 10_000;
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Lit(Value),
    Col(String),
    List(Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// `a op1 b op2 c ...`: every adjacent pair must hold.
    Cmp(Box<Expr>, Vec<(CmpOp, Expr)>),
    Arith(Box<Expr>, ArithOp, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
}

fn query_error(msg: impl Into<String>) -> Error {
    Error::invalid_input(msg)
        .with_operation("data.query")
        .with_context("input", "condition")
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Value),
    Str(String),
    Ident(String),
    Op(&'static str),
}

fn tokenize(src: &str) -> Result<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            while let Some(&ch) = chars.get(i) {
                let exponent_sign = (ch == '+' || ch == '-') && matches!(chars[i - 1], 'e' | 'E');
                if !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' || exponent_sign) {
                    break;
                }
                i += 1;
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let v = if let Ok(n) = text.parse::<i64>() {
                Value::from(n)
            } else {
                let f: f64 = text
                    .parse()
                    .map_err(|_| query_error(format!("{text:?} is not a number")))?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| query_error(format!("{text:?} is not a finite number")))?
            };
            out.push(Tok::Num(v));
            continue;
        }
        if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(query_error("a string is not closed"));
                };
                i += 1;
                if ch == c {
                    break;
                }
                if ch == '\\' {
                    let Some(&esc) = chars.get(i) else {
                        return Err(query_error("a string is not closed"));
                    };
                    i += 1;
                    s.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    s.push(ch);
                }
            }
            out.push(Tok::Str(s));
            continue;
        }
        if c == '`' {
            let start = i + 1;
            let end = chars[start..]
                .iter()
                .position(|ch| *ch == '`')
                .ok_or_else(|| query_error("a `backtick` column name is not closed"))?;
            out.push(Tok::Ident(chars[start..start + end].iter().collect()));
            i = start + end + 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = match two.as_str() {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "//" => Some("//"),
            "**" => Some("**"),
            _ => None,
        };
        if let Some(op) = op {
            out.push(Tok::Op(op));
            i += 2;
            continue;
        }
        let op = match c {
            '<' => "<",
            '>' => ">",
            '+' => "+",
            '-' => "-",
            '*' => "*",
            '/' => "/",
            '%' => "%",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            ',' => ",",
            '&' => "&",
            '|' => "|",
            '~' => "~",
            '.' => ".",
            '@' => "@",
            '=' => "=",
            other => return Err(query_error(format!("unexpected character {other:?}"))),
        };
        out.push(Tok::Op(op));
        i += 1;
    }
    Ok(out)
}

/// Parses a condition. Empty conditions are refused, as pandas refuses them.
pub(crate) fn parse(src: &str) -> Result<Expr> {
    if src.trim().is_empty() {
        return Err(query_error("the condition is empty"));
    }
    if src.len() > MAX_LEN {
        return Err(query_error(format!(
            "the condition is longer than {MAX_LEN} bytes"
        )));
    }
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.or()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(query_error(format!(
            "unexpected {} after a complete condition",
            describe(t)
        ))),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(v) => format!("number {v}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Ident(s) => format!("name {s:?}"),
        Tok::Op(o) => format!("{o:?}"),
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == w)
    }

    fn is_word_at(&self, offset: usize, w: &str) -> bool {
        matches!(self.toks.get(self.pos + offset), Some(Tok::Ident(s)) if s == w)
    }

    fn nest(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(query_error(format!(
                "the condition nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr> {
        let mut left = self.and()?;
        while self.is_word("or") || self.is_op("|") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr> {
        let mut left = self.not()?;
        while self.is_word("and") || self.is_op("&") {
            self.pos += 1;
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr> {
        if self.is_word("not") || self.is_op("~") {
            self.pos += 1;
            self.nest()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.cmp()
    }

    fn cmp_op(&mut self) -> Option<CmpOp> {
        let op = match self.peek()? {
            Tok::Op("==") => CmpOp::Eq,
            Tok::Op("!=") => CmpOp::Ne,
            Tok::Op("<") => CmpOp::Lt,
            Tok::Op("<=") => CmpOp::Le,
            Tok::Op(">") => CmpOp::Gt,
            Tok::Op(">=") => CmpOp::Ge,
            Tok::Ident(w) if w == "in" => CmpOp::In,
            Tok::Ident(w) if w == "not" && self.is_word_at(1, "in") => {
                self.pos += 1;
                CmpOp::NotIn
            }
            _ => return None,
        };
        self.pos += 1;
        Some(op)
    }

    fn cmp(&mut self) -> Result<Expr> {
        let first = self.sum()?;
        let mut rest = Vec::new();
        while let Some(op) = self.cmp_op() {
            rest.push((op, self.sum()?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Cmp(Box::new(first), rest)
        })
    }

    fn sum(&mut self) -> Result<Expr> {
        let mut left = self.term()?;
        loop {
            let op = if self.is_op("+") {
                ArithOp::Add
            } else if self.is_op("-") {
                ArithOp::Sub
            } else {
                return Ok(left);
            };
            self.pos += 1;
            let right = self.term()?;
            left = Expr::Arith(Box::new(left), op, Box::new(right));
        }
    }

    fn term(&mut self) -> Result<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = if self.is_op("*") {
                ArithOp::Mul
            } else if self.is_op("/") {
                ArithOp::Div
            } else if self.is_op("//") {
                ArithOp::FloorDiv
            } else if self.is_op("%") {
                ArithOp::Mod
            } else {
                return Ok(left);
            };
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::Arith(Box::new(left), op, Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.is_op("-") {
            self.pos += 1;
            self.nest()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(inner)));
        }
        if self.is_op("+") {
            self.pos += 1;
            return self.unary();
        }
        let atom = self.atom()?;
        if self.is_op(".") || self.is_op("(") || self.is_op("[") {
            return Err(query_error(
                "method calls, attributes and indexing are not supported in a condition (only \
                 columns, literals, comparisons, in, and/or/not and arithmetic)",
            ));
        }
        Ok(atom)
    }

    fn atom(&mut self) -> Result<Expr> {
        let Some(tok) = self.peek().cloned() else {
            return Err(query_error("the condition ends too early"));
        };
        self.pos += 1;
        match tok {
            Tok::Num(v) => Ok(Expr::Lit(v)),
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Ident(w) => match w.as_str() {
                "True" => Ok(Expr::Lit(Value::Bool(true))),
                "False" => Ok(Expr::Lit(Value::Bool(false))),
                "None" => Ok(Expr::Lit(Value::Null)),
                "and" | "or" | "not" | "in" => Err(query_error(format!(
                    "unexpected {w:?}: a value is missing before it"
                ))),
                _ => Ok(Expr::Col(w)),
            },
            Tok::Op("(") => {
                self.nest()?;
                let e = self.or()?;
                self.depth -= 1;
                if !self.is_op(")") {
                    return Err(query_error("a '(' is not closed"));
                }
                self.pos += 1;
                Ok(e)
            }
            Tok::Op("[") => {
                self.nest()?;
                let mut items = Vec::new();
                if !self.is_op("]") {
                    loop {
                        items.push(self.or()?);
                        if self.is_op(",") {
                            self.pos += 1;
                            if self.is_op("]") {
                                break;
                            }
                            continue;
                        }
                        break;
                    }
                }
                self.depth -= 1;
                if !self.is_op("]") {
                    return Err(query_error("a '[' is not closed"));
                }
                self.pos += 1;
                Ok(Expr::List(items))
            }
            Tok::Op("@") => Err(query_error(
                "@variables are not supported in a condition: write the value itself",
            )),
            Tok::Op("**") => Err(query_error("'**' is not supported in a condition")),
            Tok::Op(op) => Err(query_error(format!("unexpected {op:?}"))),
        }
    }
}

/// A value during evaluation: JSON values, plus NaN (missing) kept apart from None.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Json(Value),
    List(Vec<Val>),
    Nan,
}

fn num(v: &Val) -> Option<f64> {
    match v {
        Val::Json(Value::Number(n)) => n.as_f64(),
        Val::Json(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Nan => "float",
        Val::List(_) => "list",
        Val::Json(j) => match j {
            Value::Null => "NoneType",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_f64() => "float",
            Value::Number(_) => "int",
            Value::String(_) => "str",
            Value::Array(_) => "list",
            Value::Object(_) => "dict",
        },
    }
}

/// Python's `==`.
fn equal(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Nan, _) | (_, Val::Nan) => false,
        (Val::List(x), Val::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// Python's `<`-style ordering: numbers with numbers, strings with strings; NaN never orders.
fn order(a: &Val, b: &Val, op: CmpOp) -> Result<bool> {
    if matches!(a, Val::Nan) || matches!(b, Val::Nan) {
        return Ok(false);
    }
    let ord = match (num(a), num(b), a, b) {
        (Some(x), Some(y), _, _) => x.partial_cmp(&y),
        (_, _, Val::Json(Value::String(x)), Val::Json(Value::String(y))) => Some(x.cmp(y)),
        _ => {
            return Err(query_error(format!(
                "'{}' is not supported between {} and {}",
                match op {
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    _ => ">=",
                },
                type_name(a),
                type_name(b)
            )))
        }
    };
    let Some(ord) = ord else { return Ok(false) };
    use std::cmp::Ordering::*;
    Ok(match op {
        CmpOp::Lt => ord == Less,
        CmpOp::Le => ord != Greater,
        CmpOp::Gt => ord == Greater,
        _ => ord != Less,
    })
}

fn contains(list: &Val, item: &Val) -> Result<bool> {
    match list {
        Val::List(items) => Ok(items.iter().any(|i| equal(i, item))),
        Val::Json(Value::String(s)) => match item {
            Val::Json(Value::String(sub)) => Ok(s.contains(sub.as_str())),
            other => Err(query_error(format!(
                "'in <string>' needs a string on the left, not {}",
                type_name(other)
            ))),
        },
        other => Err(query_error(format!(
            "'in' needs a list on the right, not {}",
            type_name(other)
        ))),
    }
}

fn truthy(v: &Val) -> bool {
    match v {
        Val::Nan => true,
        Val::List(l) => !l.is_empty(),
        Val::Json(j) => super::boolean::truthy(j),
    }
}

fn number(f: f64) -> Val {
    serde_json::Number::from_f64(f).map_or(Val::Nan, |n| Val::Json(Value::Number(n)))
}

fn arith(a: &Val, op: ArithOp, b: &Val) -> Result<Val> {
    if let (ArithOp::Add, Val::Json(Value::String(x)), Val::Json(Value::String(y))) = (op, a, b) {
        return Ok(Val::Json(Value::String(format!("{x}{y}"))));
    }
    if matches!(a, Val::Nan) || matches!(b, Val::Nan) {
        return Ok(Val::Nan);
    }
    let (Some(x), Some(y)) = (num(a), num(b)) else {
        return Err(query_error(format!(
            "arithmetic between {} and {} is not supported",
            type_name(a),
            type_name(b)
        )));
    };
    let ints = |v: &Val| {
        matches!(v, Val::Json(Value::Number(n)) if !n.is_f64())
            || matches!(v, Val::Json(Value::Bool(_)))
    };
    let both_int = ints(a) && ints(b);
    let int_result = |r: f64| {
        if both_int && r.abs() < 9.0e15 {
            Val::Json(Value::from(r as i64))
        } else {
            number(r)
        }
    };
    Ok(match op {
        ArithOp::Add => int_result(x + y),
        ArithOp::Sub => int_result(x - y),
        ArithOp::Mul => int_result(x * y),
        // pandas divides by zero to inf/NaN instead of raising.
        ArithOp::Div => number(x / y),
        ArithOp::FloorDiv if y == 0.0 => Val::Nan,
        ArithOp::FloorDiv => int_result((x / y).floor()),
        ArithOp::Mod if y == 0.0 => Val::Nan,
        ArithOp::Mod => int_result(x - y * (x / y).floor()),
    })
}

/// Evaluates `e` for one row; `col` looks a column's value up (`None`: no such column).
pub(crate) fn eval(e: &Expr, col: &dyn Fn(&str) -> Option<Val>) -> Result<Val> {
    Ok(match e {
        Expr::Lit(v) => Val::Json(v.clone()),
        Expr::Col(name) => col(name).ok_or_else(|| {
            query_error(format!(
                "name {name:?} is not defined: no such column (a column name with spaces \
                 goes in backticks)"
            ))
        })?,
        Expr::List(items) => Val::List(
            items
                .iter()
                .map(|i| eval(i, col))
                .collect::<Result<Vec<_>>>()?,
        ),
        Expr::Not(inner) => Val::Json(Value::Bool(!truthy(&eval(inner, col)?))),
        Expr::Neg(inner) => arith(&Val::Json(Value::from(0)), ArithOp::Sub, &eval(inner, col)?)?,
        Expr::And(a, b) => {
            let l = eval(a, col)?;
            Val::Json(Value::Bool(truthy(&l) && truthy(&eval(b, col)?)))
        }
        Expr::Or(a, b) => {
            let l = eval(a, col)?;
            Val::Json(Value::Bool(truthy(&l) || truthy(&eval(b, col)?)))
        }
        Expr::Arith(a, op, b) => arith(&eval(a, col)?, *op, &eval(b, col)?)?,
        Expr::Cmp(first, rest) => {
            let mut left = eval(first, col)?;
            for (op, right) in rest {
                let right = eval(right, col)?;
                let holds = match op {
                    CmpOp::Eq => equal(&left, &right),
                    CmpOp::Ne => !equal(&left, &right),
                    CmpOp::In => contains(&right, &left)?,
                    CmpOp::NotIn => !contains(&right, &left)?,
                    other => order(&left, &right, *other)?,
                };
                if !holds {
                    return Ok(Val::Json(Value::Bool(false)));
                }
                left = right;
            }
            Val::Json(Value::Bool(true))
        }
    })
}

/// Whether a row matches: the condition must give a boolean, as pandas requires.
pub(crate) fn matches(e: &Expr, col: &dyn Fn(&str) -> Option<Val>) -> Result<bool> {
    match eval(e, col)? {
        Val::Json(Value::Bool(b)) => Ok(b),
        other => Err(query_error(format!(
            "the condition gives {} values, not booleans",
            type_name(&other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(name: &str) -> Option<Val> {
        Some(match name {
            "age" => Val::Json(json!(35)),
            "salary" => Val::Json(json!(40000.5)),
            "name" => Val::Json(json!("John Doe")),
            "Country Code" => Val::Json(json!("USA")),
            "status" => Val::Json(json!("Active")),
            "score" => Val::Nan,
            _ => return None,
        })
    }

    fn check(cond: &str) -> bool {
        matches(&parse(cond).unwrap(), &row).unwrap()
    }

    #[test]
    fn pandas_query_subset() {
        assert!(check("age > 30"));
        assert!(check("age > 30 and salary < 50000"));
        assert!(check("name == 'John Doe'"));
        assert!(check("30 <= age <= 40"));
        assert!(!check("40 <= age <= 50"));
        assert!(check("status in ['Active', 'Pending']"));
        assert!(!check("status not in ['Active']"));
        assert!(check("not (age < 18)"));
        assert!(check("`Country Code` == 'USA'"));
        assert!(check("(age > 40) | (age * 2 == 70)"));
        assert!(check("~(age < 18) & (age % 2 == 1)"));
        assert!(!check("score > 0") && !check("score == score") && check("score != 1"));
        assert!(check("age / 2 == 17.5 and age // 2 == 17"));
    }

    #[test]
    fn unsupported_and_bad_conditions_fail_clearly() {
        for (cond, needle) in [
            ("", "empty"),
            ("name.str.contains('J')", "method calls"),
            ("age > @limit", "@variables"),
            ("height > 3", "no such column"),
            ("age >", "ends too early"),
            ("(age > 3", "not closed"),
            ("age", "not booleans"),
            ("name < 3", "not supported between str and int"),
        ] {
            let err = parse(cond).and_then(|e| matches(&e, &row).map(|_| ()));
            let err = err.expect_err(cond);
            assert!(err.message().contains(needle), "{cond}: {err}");
        }
    }
}

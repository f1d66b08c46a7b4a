//! `nodetool.data.*`: NodeTool's pandas dataframe nodes over its `DataframeRef`
//! (`{type: "dataframe", columns: [{name, data_type}], data: [[row]...]}`), on a small
//! column store of our own ([`Table`]) with the `csv` crate for parsing (why not polars:
//! ARCHITECTURE.md, `crates/nodes`).
//!
//! Semantics follow pandas as nodetool-base uses it: column dtypes are inferred from the values
//! (int, float — ints and missing values become floats —, bool, object), `read_csv` infers per
//! column and reads pandas' NA strings as missing, the row index survives filtering, sorting and
//! appending (`RowIterator` reports it; it travels in the ref as an extra `index` list),
//! `concat(axis=1)` aligns rows by index. Missing values
//! (NaN) are JSON `null` in outputs, since JSON has no NaN. Inputs are accepted as a
//! `DataframeRef` with inline `columns`/`data`, the TypeScript nodes' `{rows: [...]}`, or a list of
//! dicts; a `DataframeRef` with only a `uri`/`asset_id` is read as JSON records (or CSV).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::context::{AssetPlacement, ProcessingContext};
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::data_query::{self, Val};
use super::py_slice_indices;

/// Limits on one table: rows times columns, and the CSV text read.
const MAX_CELLS: usize = 20_000_000;
const MAX_CSV_BYTES: usize = 256 * 1024 * 1024;

/// pandas' default NA strings for `read_csv`.
const NA_VALUES: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    Int,
    Float,
    Bool,
    Object,
}

impl Dtype {
    /// NodeTool's `dtype_name` (bool and strings are `object`).
    fn name(self) -> &'static str {
        match self {
            Dtype::Int => "int",
            Dtype::Float => "float",
            Dtype::Bool | Dtype::Object => "object",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub name: String,
    pub dtype: Dtype,
    /// `Null` is a missing value (NaN, or None in an object column).
    pub values: Vec<Value>,
}

/// A dataframe: columns of equal length and the row index labels.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Table {
    pub columns: Vec<Column>,
    pub index: Vec<i64>,
}

fn data_error(op: &'static str, msg: impl Into<String>) -> Error {
    Error::invalid_input(msg).with_operation(op)
}

/// pandas' dtype for a column of values (ints with a missing value are floats).
fn infer(values: &[Value]) -> Dtype {
    let mut has_null = false;
    let (mut ints, mut floats, mut bools, mut others) = (0, 0, 0, 0);
    for v in values {
        match v {
            Value::Null => has_null = true,
            Value::Bool(_) => bools += 1,
            Value::Number(n) if n.is_f64() => floats += 1,
            Value::Number(_) => ints += 1,
            _ => others += 1,
        }
    }
    if others > 0 || (bools > 0 && (ints + floats > 0 || has_null)) {
        Dtype::Object
    } else if bools > 0 {
        Dtype::Bool
    } else if floats > 0 || (ints > 0 && has_null) {
        Dtype::Float
    } else if ints > 0 {
        Dtype::Int
    } else {
        // Nothing but missing values.
        Dtype::Object
    }
}

fn as_float(v: &Value) -> Value {
    match v {
        Value::Number(n) if !n.is_f64() => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        other => other.clone(),
    }
}

impl Column {
    /// A column whose dtype is inferred from its values (ints of a float column become floats).
    pub(crate) fn inferred(name: String, values: Vec<Value>) -> Self {
        let dtype = infer(&values);
        let values = if dtype == Dtype::Float {
            values.iter().map(as_float).collect()
        } else {
            values
        };
        Column {
            name,
            dtype,
            values,
        }
    }
}

impl Table {
    pub(crate) fn rows(&self) -> usize {
        self.index.len()
    }

    fn check_size(&self, op: &'static str) -> Result<()> {
        let cells = self.rows().saturating_mul(self.columns.len().max(1));
        if cells > MAX_CELLS {
            return Err(Error::new(
                nodetool_core::ErrorKind::TooLarge,
                format!("the dataframe has {cells} cells, more than the {MAX_CELLS} allowed"),
            )
            .with_operation(op));
        }
        Ok(())
    }

    /// From records (dicts), columns in order of first appearance, missing keys NaN.
    pub(crate) fn from_records(records: &[Map<String, Value>]) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in records {
            for k in r.keys() {
                if !seen.contains_key(k) {
                    seen.insert(k.clone(), names.len());
                    names.push(k.clone());
                }
            }
        }
        let columns = names
            .into_iter()
            .map(|name| {
                let values = records
                    .iter()
                    .map(|r| r.get(&name).cloned().unwrap_or(Value::Null))
                    .collect();
                Column::inferred(name, values)
            })
            .collect();
        Table {
            columns,
            index: (0..records.len() as i64).collect(),
        }
    }

    /// From column names and row-major data (`pd.DataFrame(data, columns=names)`).
    fn from_rows(names: Vec<String>, data: &[Value], op: &'static str) -> Result<Self> {
        let mut cols: Vec<Vec<Value>> = vec![Vec::with_capacity(data.len()); names.len()];
        for (i, row) in data.iter().enumerate() {
            let row = row
                .as_array()
                .ok_or_else(|| data_error(op, format!("dataframe row {i} is not a list")))?;
            if row.len() != names.len() {
                return Err(data_error(
                    op,
                    format!(
                        "dataframe row {i} has {} values for {} columns",
                        row.len(),
                        names.len()
                    ),
                ));
            }
            for (c, v) in row.iter().enumerate() {
                cols[c].push(v.clone());
            }
        }
        Ok(Table {
            columns: names
                .into_iter()
                .zip(cols)
                .map(|(n, v)| Column::inferred(n, v))
                .collect(),
            index: (0..data.len() as i64).collect(),
        })
    }

    fn column(&self, name: &str, op: &'static str) -> Result<&Column> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            data_error(
                op,
                format!(
                    "no column {name:?}; the columns are {}",
                    self.columns
                        .iter()
                        .map(|c| format!("{:?}", c.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_context("column", name)
        })
    }

    /// The rows at `positions`, index labels kept.
    fn take(&self, positions: &[usize]) -> Table {
        Table {
            columns: self
                .columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    dtype: c.dtype,
                    values: positions.iter().map(|&p| c.values[p].clone()).collect(),
                })
                .collect(),
            index: positions.iter().map(|&p| self.index[p]).collect(),
        }
    }

    /// Row `i` as a dict (`row.to_dict()`).
    fn record(&self, i: usize) -> Map<String, Value> {
        self.columns
            .iter()
            .map(|c| (c.name.clone(), c.values[i].clone()))
            .collect()
    }

    fn records(&self) -> Vec<Value> {
        (0..self.rows())
            .map(|i| Value::Object(self.record(i)))
            .collect()
    }

    /// NodeTool's `DataframeRef`, data inline.
    pub(crate) fn to_ref(&self) -> Value {
        let columns: Vec<Value> = self
            .columns
            .iter()
            .map(|c| json!({"name": c.name, "data_type": c.dtype.name(), "description": ""}))
            .collect();
        let data: Vec<Value> = (0..self.rows())
            .map(|i| Value::Array(self.columns.iter().map(|c| c.values[i].clone()).collect()))
            .collect();
        let mut df = json!({"type": "dataframe", "uri": "", "asset_id": null, "data": data, "columns": columns});
        // pandas keeps row labels through filters, sorts and appends; NodeTool's DataframeRef
        // has no field for them, so a non-default index travels as an extra `index` list.
        if self.index.iter().enumerate().any(|(i, l)| *l != i as i64) {
            df["index"] = json!(self.index);
        }
        df
    }

    /// Rows matching a pandas-query `condition`.
    fn query(&self, condition: &str, op: &'static str) -> Result<Table> {
        let expr = data_query::parse(condition).map_err(|e| e.with_operation(op))?;
        let mut keep = Vec::new();
        for i in 0..self.rows() {
            let lookup = |name: &str| {
                self.columns.iter().find(|c| c.name == name).map(|c| {
                    match (&c.values[i], c.dtype) {
                        (Value::Null, Dtype::Float) => Val::Nan,
                        (v, _) => Val::Json(v.clone()),
                    }
                })
            };
            if data_query::matches(&expr, &lookup).map_err(|e| e.with_operation(op))? {
                keep.push(i);
            }
        }
        Ok(self.take(&keep))
    }
}

/// Reads a dataframe input: a `DataframeRef` (inline `columns`/`data`, or stored as JSON records
/// or CSV behind its `uri`/`asset_id`), `{rows: [...]}`, or a list of dicts.
pub(crate) async fn read_table(
    ctx: &ProcessingContext,
    inputs: &NodeInputs,
    name: &'static str,
    op: &'static str,
) -> Result<Table> {
    let v = inputs.value(name);
    let table = match &v {
        Value::Null => Table::default(),
        Value::Array(items) => records_of(items, op)?,
        Value::Object(m) => {
            if let Some(Value::Array(rows)) = m.get("rows") {
                records_of(rows, op)?
            } else if let Some(Value::Array(cols)) = m.get("columns") {
                let names = cols
                    .iter()
                    .map(|c| match c {
                        Value::String(s) => Ok(s.clone()),
                        Value::Object(c) => Ok(c
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()),
                        _ => Err(data_error(
                            op,
                            "a dataframe column is neither a name nor {name, data_type}",
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let data = m
                    .get("data")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut t = Table::from_rows(names, &data, op)?;
                if let Some(Value::Array(labels)) = m.get("index") {
                    let labels: Option<Vec<i64>> = labels.iter().map(Value::as_i64).collect();
                    match labels {
                        Some(l) if l.len() == t.rows() => t.index = l,
                        _ => {
                            return Err(data_error(
                                op,
                                "the dataframe's `index` must list one int per row",
                            ))
                        }
                    }
                }
                t
            } else if let Some(Value::Array(data)) = m.get("data") {
                records_of(data, op)?
            } else if super::image::is_empty_ref(&v) {
                Table::default()
            } else {
                let bytes = ctx
                    .asset_bytes(&v)
                    .await
                    .map_err(|e| e.with_context("input", name))?;
                table_from_bytes(&bytes, op)?
            }
        }
        other => {
            return Err(data_error(
                op,
                format!(
                    "input `{name}` must be a dataframe, got {}",
                    nodetool_engine::types::type_of(other)
                ),
            )
            .with_context("input", name))
        }
    };
    table.check_size(op)?;
    Ok(table)
}

fn records_of(items: &[Value], op: &'static str) -> Result<Table> {
    let records = items
        .iter()
        .map(|r| match r {
            Value::Object(m) => Ok(m.clone()),
            _ => Err(data_error(op, "dataframe rows must be dicts")),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Table::from_records(&records))
}

/// A stored dataframe: JSON records (NodeTool's asset format), else CSV.
fn table_from_bytes(bytes: &[u8], op: &'static str) -> Result<Table> {
    if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(bytes) {
        return records_of(&items, op);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| data_error(op, "the stored dataframe is neither JSON nor UTF-8 CSV"))?;
    read_csv(text, op)
}

/// `pd.read_csv(StringIO(text))` with pandas' defaults: a header row (duplicate names get `.1`,
/// blank ones `Unnamed: i`), blank lines skipped, short rows padded with NaN, long rows an error,
/// per-column dtype inference (int, float, bool, else strings) with pandas' NA strings missing.
pub(crate) fn read_csv(text: &str, op: &'static str) -> Result<Table> {
    if text.len() > MAX_CSV_BYTES {
        return Err(data_error(op, "the CSV text is larger than 256 MiB"));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let header = loop {
        match records.next() {
            None => return Err(data_error(op, "No columns to parse from file")),
            Some(r) => {
                let r = r.map_err(|e| data_error(op, format!("cannot parse the CSV: {e}")))?;
                if !(r.len() == 1 && r[0].is_empty()) {
                    break r;
                }
            }
        }
    };
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        let base = if h.is_empty() {
            format!("Unnamed: {i}")
        } else {
            h.to_owned()
        };
        let n = counts.entry(base.clone()).or_insert(0);
        names.push(if *n == 0 { base } else { format!("{base}.{n}") });
        *n += 1;
    }
    let width = names.len();
    let mut raw: Vec<Vec<Option<String>>> = vec![Vec::new(); width];
    let mut rows = 0usize;
    for (line, r) in records.enumerate() {
        let r = r.map_err(|e| data_error(op, format!("cannot parse the CSV: {e}")))?;
        if r.len() == 1 && r[0].is_empty() {
            continue;
        }
        if r.len() > width {
            return Err(data_error(
                op,
                format!(
                    "Error tokenizing data. C error: Expected {width} fields in line {}, saw {}",
                    line + 2,
                    r.len()
                ),
            ));
        }
        for (c, col) in raw.iter_mut().enumerate() {
            let field = r.get(c);
            col.push(field.filter(|f| !NA_VALUES.contains(f)).map(str::to_owned));
        }
        rows += 1;
        if rows.saturating_mul(width.max(1)) > MAX_CELLS {
            return Err(data_error(
                op,
                format!("the CSV has more than {MAX_CELLS} cells"),
            ));
        }
    }
    let columns = names
        .into_iter()
        .zip(raw)
        .map(|(name, values)| csv_column(name, values))
        .collect();
    Ok(Table {
        columns,
        index: (0..rows as i64).collect(),
    })
}

fn csv_column(name: String, values: Vec<Option<String>>) -> Column {
    let present: Vec<&str> = values.iter().flatten().map(String::as_str).collect();
    let has_missing = present.len() < values.len();
    let all = |f: &dyn Fn(&str) -> bool| !present.is_empty() && present.iter().all(|v| f(v));
    let parse_int = |s: &str| s.trim().parse::<i64>().ok();
    let parse_float = |s: &str| s.trim().parse::<f64>().ok().filter(|f| f.is_finite());
    let truth = |s: &str| match s {
        "True" | "TRUE" | "true" => Some(true),
        "False" | "FALSE" | "false" => Some(false),
        _ => None,
    };
    let map = |f: &dyn Fn(&str) -> Value| -> Vec<Value> {
        values
            .iter()
            .map(|v| v.as_deref().map_or(Value::Null, f))
            .collect()
    };
    let (dtype, vals) = if all(&|s| parse_int(s).is_some()) && !has_missing {
        (Dtype::Int, map(&|s| json!(parse_int(s).unwrap_or(0))))
    } else if all(&|s| parse_float(s).is_some()) {
        (
            Dtype::Float,
            map(&|s| {
                parse_float(s)
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }),
        )
    } else if all(&|s| truth(s).is_some()) {
        let dtype = if has_missing {
            Dtype::Object
        } else {
            Dtype::Bool
        };
        (dtype, map(&|s| json!(truth(s).unwrap_or(false))))
    } else {
        (Dtype::Object, map(&|s| json!(s)))
    };
    Column {
        name,
        dtype,
        values: vals,
    }
}

// ---- nodes ----------------------------------------------------------------------------------

type TableFn = fn(&NodeInputs, Vec<Table>) -> Result<Value>;

fn empty_df() -> Value {
    json!({"type": "dataframe", "uri": "", "asset_id": null, "data": null, "columns": null})
}

/// A node of dataframes in (`tables`, read through [`read_table`]), one value out.
#[derive(Debug)]
struct TableNode {
    spec: NodeSpec,
    tables: &'static [&'static str],
    op: &'static str,
    f: TableFn,
}

#[async_trait]
impl NodeImpl for TableNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let mut tables = Vec::with_capacity(self.tables.len());
        for name in self.tables {
            tables.push(read_table(ctx, inputs, name, self.op).await?);
        }
        let value = (self.f)(inputs, tables).map_err(|e| e.with_operation(self.op))?;
        out.emit("output", value).await
    }
}

fn spec(class: &str, title: &str) -> NodeSpec {
    NodeSpec::new(format!("nodetool.data.{class}"), title).cacheable()
}

fn register_table(
    r: &mut Registry,
    spec: NodeSpec,
    tables: &'static [&'static str],
    op: &'static str,
    f: TableFn,
) {
    let spec = tables
        .iter()
        .fold(spec, |s, t| s.input(t, "dataframe", empty_df()));
    r.register(Arc::new(TableNode {
        spec,
        tables,
        op,
        f,
    }));
}

fn one(tables: Vec<Table>) -> Table {
    tables.into_iter().next().unwrap_or_default()
}

/// A comma-separated list of names, each trimmed.
fn names(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

pub fn register(r: &mut Registry) {
    fn_nodes(r);
    register_table(
        r,
        spec("Filter", "Filter")
            .input("condition", "str", json!(""))
            .output("output", "dataframe"),
        &["df"],
        "data.filter",
        |i, t| Ok(one(t).query(&i.str("condition")?, "data.filter")?.to_ref()),
    );
    register_table(
        r,
        spec("FindRow", "Find Row")
            .input("condition", "str", json!(""))
            .output("output", "dataframe"),
        &["df"],
        "data.find_row",
        |i, t| {
            let found = one(t).query(&i.str("condition")?, "data.find_row")?;
            let first: Vec<usize> = (0..found.rows().min(1)).collect();
            Ok(found.take(&first).to_ref())
        },
    );
    register_table(
        r,
        spec("Slice", "Slice")
            .input("start_index", "int", json!(0))
            .input("end_index", "int", json!(-1))
            .output("output", "dataframe"),
        &["dataframe"],
        "data.slice",
        |i, t| {
            let t = one(t);
            let start = i.opt_i64("start_index")?.unwrap_or(0);
            let end = match i.opt_i64("end_index")?.unwrap_or(-1) {
                -1 => t.rows() as i64,
                e => e,
            };
            let positions = py_slice_indices(t.rows(), Some(start), Some(end), 1);
            Ok(t.take(&positions).to_ref())
        },
    );
    register_table(
        r,
        spec("ToList", "To List").output("output", "list[dict]"),
        &["dataframe"],
        "data.to_list",
        |_, t| Ok(Value::Array(one(t).records())),
    );
    register_table(
        r,
        spec("SelectColumn", "Select Column")
            .input("columns", "str", json!(""))
            .output("output", "dataframe"),
        &["dataframe"],
        "data.select_column",
        |i, t| {
            let t = one(t);
            let mut columns = Vec::new();
            for name in names(&i.str("columns")?) {
                columns.push(t.column(&name, "data.select_column")?.clone());
            }
            Ok(Table {
                columns,
                index: t.index,
            }
            .to_ref())
        },
    );
    register_table(
        r,
        spec("ExtractColumn", "Extract Column")
            .input("column_name", "str", json!(""))
            .output("output", "list[any]"),
        &["dataframe"],
        "data.extract_column",
        |i, t| {
            let t = one(t);
            Ok(Value::Array(
                t.column(&i.str("column_name")?, "data.extract_column")?
                    .values
                    .clone(),
            ))
        },
    );
    register_table(
        r,
        spec("AddColumn", "Add Column")
            .input("column_name", "str", json!(""))
            .input("values", "list[any]", json!([]))
            .output("output", "dataframe"),
        &["dataframe"],
        "data.add_column",
        |i, t| {
            let mut t = one(t);
            let name = i.str("column_name")?;
            let values = i.list("values")?;
            if t.columns.is_empty() && t.rows() == 0 {
                t.index = (0..values.len() as i64).collect();
            }
            if values.len() != t.rows() {
                return Err(data_error(
                    "data.add_column",
                    format!(
                        "Length of values ({}) does not match length of index ({})",
                        values.len(),
                        t.rows()
                    ),
                ));
            }
            let col = Column::inferred(name.clone(), values);
            match t.columns.iter_mut().find(|c| c.name == name) {
                Some(existing) => *existing = col,
                None => t.columns.push(col),
            }
            Ok(t.to_ref())
        },
    );
    register_table(
        r,
        spec("Merge", "Merge").output("output", "dataframe"),
        &["dataframe_a", "dataframe_b"],
        "data.merge",
        |_, t| {
            let mut it = t.into_iter();
            let (a, b) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
            Ok(concat_columns(a, b).to_ref())
        },
    );
    register_table(
        r,
        spec("Append", "Append").output("output", "dataframe"),
        &["dataframe_a", "dataframe_b"],
        "data.append",
        |_, t| {
            let mut it = t.into_iter();
            let (a, b) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
            Ok(append(a, b)?.to_ref())
        },
    );
    register_table(
        r,
        spec("Join", "Join")
            .input("join_on", "str", json!(""))
            .output("output", "dataframe"),
        &["dataframe_a", "dataframe_b"],
        "data.join",
        |i, t| {
            let mut it = t.into_iter();
            let (a, b) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
            Ok(join(a, b, &i.str("join_on")?)?.to_ref())
        },
    );
    register_table(
        r,
        spec("SortByColumn", "Sort By Column")
            .input("column", "str", json!(""))
            .output("output", "dataframe"),
        &["df"],
        "data.sort",
        |i, t| Ok(sort(one(t), &i.str("column")?)?.to_ref()),
    );
    register_table(
        r,
        spec("DropDuplicates", "Drop Duplicates").output("output", "dataframe"),
        &["df"],
        "data.drop_duplicates",
        |_, t| {
            let t = one(t);
            let mut seen = std::collections::HashSet::new();
            let keep: Vec<usize> = (0..t.rows())
                .filter(|&i| {
                    let key: Vec<String> =
                        t.columns.iter().map(|c| c.values[i].to_string()).collect();
                    seen.insert(key)
                })
                .collect();
            Ok(t.take(&keep).to_ref())
        },
    );
    register_table(
        r,
        spec("DropNA", "Drop NA").output("output", "dataframe"),
        &["df"],
        "data.dropna",
        |_, t| {
            let t = one(t);
            let keep: Vec<usize> = (0..t.rows())
                .filter(|&i| t.columns.iter().all(|c| !c.values[i].is_null()))
                .collect();
            Ok(t.take(&keep).to_ref())
        },
    );
    register_table(
        r,
        spec("Rename", "Rename")
            .input("rename_map", "str", json!(""))
            .output("output", "dataframe"),
        &["dataframe"],
        "data.rename",
        |i, t| {
            let mut t = one(t);
            for mapping in i.str("rename_map")?.split(',') {
                if let Some((old, new)) = mapping.trim().split_once(':') {
                    for c in t.columns.iter_mut().filter(|c| c.name == old.trim()) {
                        c.name = new.trim().to_owned();
                    }
                }
            }
            Ok(t.to_ref())
        },
    );
    register_table(
        r,
        spec("FillNA", "Fill NA")
            .input("value", "any", json!(0))
            .input("method", "str", json!("value"))
            .input("columns", "str", json!(""))
            .output("output", "dataframe"),
        &["dataframe"],
        "data.fillna",
        |i, t| Ok(fill_na(one(t), i)?.to_ref()),
    );
    for (class, title, out_name) in [
        ("RowIterator", "Row Iterator", "dict"),
        ("ForEachRow", "For Each Row", "row"),
    ] {
        r.register(Arc::new(RowIterator {
            spec: NodeSpec::new(format!("nodetool.data.{class}"), title)
                .input("dataframe", "dataframe", empty_df())
                .output(out_name, "dict")
                .output("index", "any")
                .streaming(),
            out_name,
        }));
    }
    r.register(Arc::new(SaveDataframe {
        spec: NodeSpec::new("nodetool.data.SaveDataframe", "Save Dataframe")
            .required("df", "dataframe")
            .input(
                "folder",
                "folder",
                json!({"type": "folder", "uri": "", "asset_id": null, "data": null}),
            )
            .input("name", "str", json!("output.csv"))
            .output("output", "dataframe"),
    }));
}

/// The nodes that take no dataframe: ImportCSV, FromList, JSONToDataframe, Schema.
fn fn_nodes(r: &mut Registry) {
    super::fn_node(
        r,
        spec("ImportCSV", "Import CSV")
            .input("csv_data", "str", json!(""))
            .output("output", "dataframe"),
        |i| {
            let t = read_csv(&i.str("csv_data")?, "data.import_csv")?;
            Ok(t.to_ref())
        },
    );
    super::fn_node(
        r,
        spec("FromList", "From List")
            .input("values", "list[any]", json!([]))
            .output("output", "dataframe"),
        |i| {
            let mut records = Vec::new();
            for v in i.list("values")? {
                let Value::Object(m) = v else {
                    return Err(data_error("data.from_list", "List must contain dicts."));
                };
                // A dict value is NodeTool's `{value: ...}` wrapper; other containers print as
                // Python's str() does.
                let row: Map<String, Value> = m
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::Object(inner) => {
                                inner.get("value").cloned().ok_or_else(|| {
                                    data_error(
                                        "data.from_list",
                                        format!("the dict in column {k:?} has no \"value\" key"),
                                    )
                                })?
                            }
                            Value::Array(_) => json!(super::text::python_str(&v)),
                            other => other,
                        };
                        Ok((k, v))
                    })
                    .collect::<Result<_>>()?;
                records.push(row);
            }
            Ok(Table::from_records(&records).to_ref())
        },
    );
    super::fn_node(
        r,
        spec("JSONToDataframe", "Convert JSON to DataFrame")
            .input("text", "str", json!(""))
            .output("output", "dataframe"),
        |i| {
            const OP: &str = "data.json_to_dataframe";
            let v: Value = serde_json::from_str(&i.str("text")?)
                .map_err(|e| data_error(OP, format!("the text is not JSON: {e}")))?;
            let t = match v {
                Value::Array(items) => records_of(&items, OP)?,
                Value::Object(cols) => {
                    // A dict of columns.
                    let len = cols
                        .values()
                        .map(|c| c.as_array().map_or(1, Vec::len))
                        .max()
                        .unwrap_or(0);
                    let mut columns = Vec::new();
                    for (name, c) in cols {
                        let values = match c {
                            Value::Array(a) if a.len() == len => a,
                            Value::Array(_) => {
                                return Err(data_error(OP, "All arrays must be of the same length"))
                            }
                            scalar => vec![scalar; len],
                        };
                        columns.push(Column::inferred(name, values));
                    }
                    Table {
                        columns,
                        index: (0..len as i64).collect(),
                    }
                }
                _ => {
                    return Err(data_error(
                        OP,
                        "the JSON must be a list of dicts or a dict of lists",
                    ))
                }
            };
            t.check_size(OP)?;
            Ok(t.to_ref())
        },
    );
    super::fn_node(
        r,
        spec("Schema", "Schema")
            .input(
                "columns",
                "record_type",
                json!({"type": "record_type", "columns": []}),
            )
            .output("output", "record_type"),
        |i| Ok(i.value("columns")),
    );
}

/// `pd.concat([a, b], axis=1)`: rows aligned by index label (the labels of `a`, then new ones
/// of `b`), missing cells NaN.
fn concat_columns(a: Table, b: Table) -> Table {
    if a.index == b.index {
        let mut out = a;
        out.columns.extend(b.columns);
        return out;
    }
    let mut index = a.index.clone();
    for l in &b.index {
        if !index.contains(l) {
            index.push(*l);
        }
    }
    let realign = |t: &Table| -> Vec<Column> {
        let pos: HashMap<i64, usize> = t.index.iter().enumerate().map(|(p, l)| (*l, p)).collect();
        t.columns
            .iter()
            .map(|c| {
                let values = index
                    .iter()
                    .map(|l| pos.get(l).map_or(Value::Null, |&p| c.values[p].clone()))
                    .collect();
                Column::inferred(c.name.clone(), values)
            })
            .collect()
    };
    let mut columns = realign(&a);
    columns.extend(realign(&b));
    Table { columns, index }
}

/// `pd.concat([a, b], axis=0)` when both have the same columns; an empty side gives the other.
fn append(a: Table, b: Table) -> Result<Table> {
    let empty = |t: &Table| t.rows() == 0 || t.columns.is_empty();
    if empty(&a) {
        return Ok(b);
    }
    if empty(&b) {
        return Ok(a);
    }
    let names = |t: &Table| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if names(&a) != names(&b) {
        return Err(data_error(
            "data.append",
            format!(
                "Columns in dataframe A ({:?}) do not match columns in dataframe B ({:?})",
                names(&a),
                names(&b)
            ),
        ));
    }
    let columns = a
        .columns
        .into_iter()
        .zip(b.columns)
        .map(|(x, y)| {
            let mut values = x.values;
            values.extend(y.values);
            Column::inferred(x.name, values)
        })
        .collect();
    let mut index = a.index;
    index.extend(b.index);
    Ok(Table { columns, index })
}

/// `pd.merge(a, b, on=join_on)` (inner join, `_x`/`_y` suffixes), after NodeTool's check that
/// both have the same columns.
fn join(a: Table, b: Table, on: &str) -> Result<Table> {
    const OP: &str = "data.join";
    let names = |t: &Table| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if names(&a) != names(&b) {
        return Err(data_error(
            OP,
            format!(
                "Columns in dataframe A ({:?}) do not match columns in dataframe B ({:?})",
                names(&a),
                names(&b)
            ),
        ));
    }
    let (ka, kb) = (a.column(on, OP)?.clone(), b.column(on, OP)?.clone());
    let mut pairs = Vec::new();
    for (i, x) in ka.values.iter().enumerate() {
        for (j, y) in kb.values.iter().enumerate() {
            if !x.is_null() && x == y {
                pairs.push((i, j));
            }
        }
    }
    let mut columns = vec![Column::inferred(
        on.to_owned(),
        pairs.iter().map(|&(i, _)| ka.values[i].clone()).collect(),
    )];
    for (t, suffix, pick) in [(&a, "_x", 0usize), (&b, "_y", 1usize)] {
        for c in t.columns.iter().filter(|c| c.name != on) {
            let values = pairs
                .iter()
                .map(|p| c.values[if pick == 0 { p.0 } else { p.1 }].clone())
                .collect();
            columns.push(Column::inferred(format!("{}{suffix}", c.name), values));
        }
    }
    // pandas puts the key where it was in `a`.
    let key_at = a.columns.iter().position(|c| c.name == on).unwrap_or(0);
    let key = columns.remove(0);
    columns.insert(key_at.min(columns.len()), key);
    if pairs.len() > MAX_CELLS / columns.len().max(1) {
        return Err(data_error(OP, "the join result is too large"));
    }
    Ok(Table {
        index: (0..pairs.len() as i64).collect(),
        columns,
    })
}

/// `df.sort_values(column)`: ascending, missing values last, ties in their original order.
fn sort(t: Table, column: &str) -> Result<Table> {
    const OP: &str = "data.sort";
    let col = t.column(column, OP)?;
    let mut kinds = col.values.iter().filter(|v| !v.is_null()).map(|v| match v {
        Value::String(_) => 1,
        Value::Number(_) | Value::Bool(_) => 0,
        _ => 2,
    });
    let first = kinds.next();
    if first == Some(2) || kinds.any(|k| Some(k) != first) {
        return Err(data_error(
            OP,
            format!("column {column:?} mixes values that cannot be compared ('<' not supported)"),
        ));
    }
    let mut order: Vec<usize> = (0..t.rows()).collect();
    order.sort_by(|&x, &y| {
        let (a, b) = (&col.values[x], &col.values[y]);
        match (a.is_null(), b.is_null()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => match (
                a.as_f64().or(a.as_bool().map(f64::from)),
                b.as_f64().or(b.as_bool().map(f64::from)),
            ) {
                (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(std::cmp::Ordering::Equal),
                _ => a.as_str().cmp(&b.as_str()),
            },
        }
    });
    Ok(t.take(&order))
}

fn fill_na(mut t: Table, i: &NodeInputs) -> Result<Table> {
    const OP: &str = "data.fillna";
    let cols = match names(&i.str("columns")?) {
        n if n.is_empty() => t.columns.iter().map(|c| c.name.clone()).collect(),
        n => n,
    };
    for name in &cols {
        t.column(name, OP)?;
    }
    let method = i.str("method")?;
    let fill = i.value("value");
    for c in t.columns.iter_mut().filter(|c| cols.contains(&c.name)) {
        let numeric = matches!(c.dtype, Dtype::Int | Dtype::Float);
        let present: Vec<f64> = c.values.iter().filter_map(Value::as_f64).collect();
        let stat = match method.as_str() {
            "mean" if numeric && !present.is_empty() => {
                Some(present.iter().sum::<f64>() / present.len() as f64)
            }
            "median" if numeric && !present.is_empty() => {
                let mut s = present.clone();
                s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                let m = s.len() / 2;
                Some(if s.len().is_multiple_of(2) {
                    (s[m - 1] + s[m]) / 2.0
                } else {
                    s[m]
                })
            }
            _ => None,
        };
        let values = std::mem::take(&mut c.values);
        let filled: Vec<Value> = match method.as_str() {
            "value" => values
                .into_iter()
                .map(|v| if v.is_null() { fill.clone() } else { v })
                .collect(),
            "forward" => {
                let mut last = Value::Null;
                values
                    .into_iter()
                    .map(|v| {
                        if v.is_null() {
                            last.clone()
                        } else {
                            last = v.clone();
                            v
                        }
                    })
                    .collect()
            }
            "backward" => {
                let mut next = Value::Null;
                let mut out: Vec<Value> = values
                    .into_iter()
                    .rev()
                    .map(|v| {
                        if v.is_null() {
                            next.clone()
                        } else {
                            next = v.clone();
                            v
                        }
                    })
                    .collect();
                out.reverse();
                out
            }
            "mean" | "median" => match stat {
                Some(s) => values
                    .into_iter()
                    .map(|v| if v.is_null() { json!(s) } else { v })
                    .collect(),
                None => values,
            },
            other => {
                return Err(data_error(OP, format!("Unknown fill method: {other}"))
                    .with_context("input", "method"))
            }
        };
        *c = Column::inferred(c.name.clone(), filled);
    }
    Ok(t)
}

/// `RowIterator` / `ForEachRow`: each row as a dict, with its index label.
#[derive(Debug)]
struct RowIterator {
    spec: NodeSpec,
    out_name: &'static str,
}

#[async_trait]
impl NodeImpl for RowIterator {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let t = read_table(ctx, inputs, "dataframe", "data.row_iterator").await?;
        for i in 0..t.rows() {
            ctx.check_cancelled()?;
            out.emit(self.out_name, Value::Object(t.record(i))).await?;
            out.emit("index", json!(t.index[i])).await?;
        }
        Ok(())
    }
}

/// `SaveDataframe`: the dataframe as a CSV asset (`name` expanded, in `folder`), emitted as a
/// `DataframeRef` naming the asset with the data inline.
#[derive(Debug)]
struct SaveDataframe {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for SaveDataframe {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "data.save";
        let t = read_table(ctx, inputs, "df", OP).await?;
        let mut w = csv::Writer::from_writer(Vec::new());
        let write = |w: &mut csv::Writer<Vec<u8>>, fields: Vec<String>| {
            w.write_record(fields)
                .map_err(|e| Error::unexpected(format!("cannot write CSV: {e}")).with_operation(OP))
        };
        write(&mut w, t.columns.iter().map(|c| c.name.clone()).collect())?;
        for i in 0..t.rows() {
            write(
                &mut w,
                t.columns
                    .iter()
                    .map(|c| match &c.values[i] {
                        Value::Null => String::new(),
                        Value::String(s) => s.clone(),
                        other => super::text::python_str(other),
                    })
                    .collect(),
            )?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| Error::unexpected(format!("cannot write CSV: {e}")).with_operation(OP))?;
        let name = super::asset::expand_name(&inputs.str("name")?, std::time::SystemTime::now());
        let placement = AssetPlacement {
            name: Some(name),
            parent_id: super::asset::folder_id(&inputs.value("folder")),
        };
        let asset = ctx
            .create_asset_in("dataframe", "text/csv", bytes.into(), &placement)
            .await?;
        let mut df = t.to_ref();
        if let (Value::Object(d), Value::Object(a)) = (&mut df, asset) {
            for k in ["uri", "asset_id"] {
                if let Some(v) = a.get(k) {
                    d.insert(k.to_owned(), v.clone());
                }
            }
        }
        out.emit("output", df).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_csv_infers_like_pandas() {
        let t = read_csv(
            "a,b,c,d,a\n1,2.5,True,x,1\n\n2,,False,NA,2\n3,4,True,\"y, z\"\n",
            "t",
        )
        .unwrap();
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "a.1"]);
        let dtypes: Vec<Dtype> = t.columns.iter().map(|c| c.dtype).collect();
        assert_eq!(
            dtypes,
            [
                Dtype::Int,
                Dtype::Float,
                Dtype::Bool,
                Dtype::Object,
                Dtype::Float
            ]
        );
        assert_eq!(
            t.columns[1].values,
            vec![json!(2.5), Value::Null, json!(4.0)]
        );
        assert_eq!(
            t.columns[3].values,
            vec![json!("x"), Value::Null, json!("y, z")]
        );
        assert!(read_csv("a,b\n1,2,3\n", "t")
            .unwrap_err()
            .message()
            .contains("Expected 2 fields in line 2, saw 3"));
        assert!(read_csv("", "t").is_err());
    }

    #[test]
    fn merge_aligns_by_index() {
        let a = Table::from_records(&[
            json!({"x": 1}).as_object().unwrap().clone(),
            json!({"x": 2}).as_object().unwrap().clone(),
        ]);
        let b = a.take(&[1]);
        let m = concat_columns(a, b);
        assert_eq!(m.columns[1].values, vec![Value::Null, json!(2.0)]);
        assert_eq!(m.columns[1].dtype, Dtype::Float);
    }
}

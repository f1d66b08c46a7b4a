//! `lib.pymupdf.ExtractText` (nodetool-base `lib/pymupdf.py`): the text of a page range of a
//! PDF, with `pdf-extract` (on lopdf) instead of MuPDF.
//!
//! Like PyMuPDF's `page.get_text()`, each text line of a page ends with a newline and the pages
//! are concatenated. `pdf-extract` lays text out from glyph positions; lines that MuPDF would
//! join or split differently (columns, hyphenation, tables) can differ in whitespace. It panics
//! on some malformed files; such a panic is caught and reported as an invalid PDF.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use nodetool_core::{Error, ErrorKind, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::image::{blocking, is_empty_ref};

const OP: &str = "pdf.extract_text";
/// The largest PDF read.
const MAX_PDF_BYTES: usize = 256 * 1024 * 1024;

pub fn register(r: &mut Registry) {
    r.register(Arc::new(ExtractText {
        spec: NodeSpec::new("lib.pymupdf.ExtractText", "Extract Text")
            .required("pdf", "document")
            .input("start_page", "int", json!(0))
            .input("end_page", "int", json!(-1))
            .output("output", "str")
            .cacheable(),
    }));
}

#[derive(Debug)]
struct ExtractText {
    spec: NodeSpec,
}

fn pdf_error(msg: impl Into<String>) -> Error {
    Error::invalid_input(msg).with_operation(OP)
}

/// Every page's text, in order.
fn pages_of(bytes: &[u8]) -> Result<Vec<String>> {
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes));
    match result {
        Ok(Ok(pages)) => Ok(pages),
        Ok(Err(e)) => Err(pdf_error(format!("cannot read the PDF: {e}"))),
        Err(_) => Err(pdf_error(
            "cannot read the PDF: the file is malformed or uses a feature the PDF reader does \
             not support",
        )),
    }
}

/// One page's text as MuPDF prints it: lines without leading blank lines, each ending in `\n`.
fn normalize(page: &str) -> String {
    let mut out = String::new();
    for line in page.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        out.push_str(line.trim_start());
        out.push('\n');
    }
    out
}

#[async_trait]
impl NodeImpl for ExtractText {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let pdf = inputs.value("pdf");
        if is_empty_ref(&pdf) || !pdf.is_object() {
            return Err(pdf_error("input `pdf` is not connected: no document given")
                .with_context("input", "pdf"));
        }
        let start = inputs.opt_i64("start_page")?.unwrap_or(0);
        let end = inputs.opt_i64("end_page")?.unwrap_or(-1);
        let bytes = ctx
            .asset_bytes(&pdf)
            .await
            .map_err(|e| e.with_context("input", "pdf"))?;
        if bytes.len() > MAX_PDF_BYTES {
            return Err(
                Error::new(ErrorKind::TooLarge, "the PDF is larger than 256 MiB")
                    .with_operation(OP),
            );
        }
        if !bytes.starts_with(b"%PDF") {
            return Err(pdf_error("input `pdf` is not a PDF file (no %PDF header)"));
        }
        let text = blocking(OP, move || {
            let pages = pages_of(&bytes)?;
            let count = pages.len() as i64;
            let end = if end == -1 { count - 1 } else { end };
            if start < 0 || start >= count.max(1) {
                return Err(pdf_error(format!(
                    "start_page {start} is not a page of this {count}-page document (pages count from 0)"
                ))
                .with_context("input", "start_page"));
            }
            if end >= count {
                return Err(pdf_error(format!(
                    "end_page {end} is past the last page of this {count}-page document (pages \
                     count from 0; -1 is the last page)"
                ))
                .with_context("input", "end_page"));
            }
            // range(start, end + 1): empty when end < start, as in Python.
            Ok((start..=end)
                .filter_map(|p| pages.get(p as usize))
                .map(|p| normalize(p))
                .collect::<String>())
        })
        .await?;
        out.emit("output", json!(text)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_pdfs_are_errors_not_panics() {
        for bytes in [
            &b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF"[..],
            &b"%PDF-1.7 garbage garbage"[..],
            &b"%PDF-"[..],
        ] {
            let err = pages_of(bytes).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        }
    }

    #[test]
    fn pages_print_as_mupdf_lines() {
        assert_eq!(
            normalize("\n\n  Title  \n\nBody line\n"),
            "Title\nBody line\n"
        );
    }
}

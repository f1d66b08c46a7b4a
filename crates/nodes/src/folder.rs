//! Local folders, always through the file-roots policy (`NODETOOL_FILE_ROOTS` and the user's
//! part of the asset folder; see `nodetool_engine::media`): `nodetool.input.FolderPathInput`
//! and `nodetool.image.LoadImageFolder`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::media::{resolve_in_roots, Want};
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeKind, NodeSpec};
use nodetool_engine::registry::Registry;

pub fn register(r: &mut Registry) {
    r.register(Arc::new(FolderPathInput {
        spec: NodeSpec::new("nodetool.input.FolderPathInput", "Folder Path Input")
            .input("name", "str", json!(""))
            .input("value", PATH_TYPE, json!(""))
            .input("description", "str", json!(""))
            .output("output", "str")
            .kind(NodeKind::Input),
    }));
    r.register(Arc::new(LoadImageFolder {
        spec: NodeSpec::new("nodetool.image.LoadImageFolder", "Load Image Folder")
            .input("folder", PATH_TYPE, json!(""))
            .input("include_subdirectories", "bool", json!(false))
            .input(
                "extensions",
                "list[str]",
                json!([".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tiff"]),
            )
            .input("pattern", "str", json!(""))
            .output("image", "image")
            .output("path", "str")
            .streaming(),
    }));
}

/// A path property: a string, or NodeTool's `{"type": "file_path" | "folder_path", "path"}`
/// object (both appear in saved workflows).
pub(crate) const PATH_TYPE: &str = "union[str, file_path]";

/// The path text of a [`PATH_TYPE`] value (`""` for none).
pub(crate) fn path_text(inputs: &NodeInputs, name: &str) -> Result<String> {
    match inputs.value(name) {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        Value::Object(m) => match m.get("path") {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(p)) => Ok(p.clone()),
            Some(other) => Err(Error::invalid_input(format!(
                "input `{name}`: `path` must be text, got {other}"
            ))),
        },
        other => Err(Error::invalid_input(format!(
            "input `{name}` must be a path (text or {{\"type\": \"file_path\", \"path\": ...}}), got {other}"
        ))
        .with_context("input", name.to_owned())),
    }
}

/// A folder inside the job's roots, canonical, or why not.
async fn folder_in_roots(
    ctx: &ProcessingContext,
    folder: &str,
    op: &'static str,
) -> Result<PathBuf> {
    let roots = ctx.file_roots();
    let path = PathBuf::from(folder);
    tokio::task::spawn_blocking(move || resolve_in_roots(&path, &roots, Want::Dir))
        .await
        .map_err(|e| Error::unexpected(format!("folder task failed: {e}")).with_operation(op))?
        .map_err(|e| e.with_operation(op))
}

/// `nodetool.input.FolderPathInput`: a folder path param, checked to be a folder inside the
/// file roots before anything downstream uses it (the value itself goes on unchanged).
#[derive(Debug)]
struct FolderPathInput {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for FolderPathInput {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let value = path_text(inputs, "value")?;
        if !value.is_empty() {
            folder_in_roots(ctx, &value, "input.folder_path").await?;
        }
        out.emit("output", json!(value)).await
    }
}

/// `nodetool.image.LoadImageFolder`: every image file of a folder (and, optionally, its
/// subfolders), in name order, as `{image, path}` pairs; `image` is a `file://` ref the image
/// nodes read through the same roots. Symlinks that lead out of the roots are skipped.
#[derive(Debug)]
struct LoadImageFolder {
    spec: NodeSpec,
}

/// Python's `fnmatch.fnmatch` on a path (`*`, `?`, `[seq]`, `[!seq]`; case-sensitive on POSIX).
pub(crate) fn fnmatch(name: &str, pattern: &str) -> bool {
    fn go(n: &[char], p: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&n[i..], &p[1..])),
            Some('?') => !n.is_empty() && go(&n[1..], &p[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|c| *c == ']').map(|e| e + 1) else {
                    return n.first() == Some(&'[') && go(&n[1..], &p[1..]);
                };
                let Some(c) = n.first() else { return false };
                let (negate, set) = match p.get(1) {
                    Some('!') => (true, &p[2..end]),
                    _ => (false, &p[1..end]),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= *c && *c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == *c;
                        i += 1;
                    }
                }
                hit != negate && go(&n[1..], &p[end + 1..])
            }
            Some(ch) => n.first() == Some(ch) && go(&n[1..], &p[1..]),
        }
    }
    let n: Vec<char> = name.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    go(&n, &p)
}

/// Image files under `folder` that stay inside `roots`, in name order.
fn list_images(
    folder: &Path,
    roots: &[PathBuf],
    recursive: bool,
    extensions: &[String],
    pattern: &str,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![folder.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        names.sort();
        for path in names {
            // Resolved like any other file: a symlink out of the roots is not listed.
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue;
            };
            if !roots.iter().any(|r| real.starts_with(r)) {
                continue;
            }
            if real.is_dir() {
                if recursive {
                    dirs.push(path);
                }
                continue;
            }
            let ext = path
                .extension()
                .map(|e| format!(".{}", e.to_string_lossy().to_lowercase()))
                .unwrap_or_default();
            if !extensions.iter().any(|e| e.to_lowercase() == ext) {
                continue;
            }
            if !pattern.is_empty() && !fnmatch(&path.to_string_lossy(), pattern) {
                continue;
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

#[async_trait]
impl NodeImpl for LoadImageFolder {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "image.load_folder";
        let folder = path_text(inputs, "folder")?;
        if folder.is_empty() {
            return Err(Error::invalid_input("folder cannot be empty").with_operation(OP));
        }
        let real = folder_in_roots(ctx, &folder, OP).await?;
        let recursive = inputs.bool("include_subdirectories")?;
        let extensions: Vec<String> = inputs
            .list("extensions")?
            .iter()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect();
        let pattern = inputs.str("pattern")?;
        let roots: Vec<PathBuf> = ctx
            .file_roots()
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .collect();
        let files = tokio::task::spawn_blocking(move || {
            list_images(&real, &roots, recursive, &extensions, &pattern)
        })
        .await
        .map_err(|e| Error::unexpected(format!("folder task failed: {e}")).with_operation(OP))?;
        for path in files {
            ctx.check_cancelled()?;
            let text = path.display().to_string();
            let uri = format!(
                "file://{}",
                percent_encoding::utf8_percent_encode(&text, PATH_CHARS)
            );
            out.emit(
                "image",
                json!({"type": "image", "uri": uri, "asset_id": Value::Null, "data": Value::Null}),
            )
            .await?;
            out.emit("path", json!(text)).await?;
        }
        Ok(())
    }
}

/// Characters escaped in a `file://` path: controls, space and the URI delimiters.
const PATH_CHARS: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_like_python() {
        assert!(fnmatch("/a/b/cat_1.png", "*cat_?.png"));
        assert!(!fnmatch("/a/b/cat_10.png", "*cat_?.png"));
        assert!(fnmatch("x.PNG", "*.[Pp][Nn][Gg]"));
        assert!(fnmatch("b.png", "[!a]*"));
        assert!(!fnmatch("a.png", "[!a]*"));
        assert!(fnmatch("[x", "[x"));
    }
}

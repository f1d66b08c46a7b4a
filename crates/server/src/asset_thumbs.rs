//! `GET /api/assets/{id}/thumbnail`: a JPEG of at most [`THUMB_SIZE`]² pixels for an image
//! asset, generated once with the `image` crate and cached in asset storage at
//! `{user_id}/{asset_id}_thumb.jpg` (deleted with the asset). Served like any stored object:
//! `ETag`/`Last-Modified`, `If-None-Match` → 304, ranges, and a presigned redirect on backends
//! that presign.
//!
//! The caller's own assets only (another user's is "not found"). Not an image: 404 ("no
//! thumbnail"). An image larger than [`MAX_SOURCE_BYTES`] or [`MAX_DIMENSION`] per side, or
//! one that cannot be decoded: 422 with the reason. Two first requests at once may both
//! generate it; the result is the same bytes.

use std::io::Cursor;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use nodetool_core::{AssetRecord, PutOptions, StorageKey};

use crate::assets::find;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::storage_routes::serve_object;
use crate::AppState;

/// The longest side of a thumbnail.
pub const THUMB_SIZE: u32 = 512;
/// Larger source images are not thumbnailed.
pub const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;
/// Larger source dimensions are refused before decoding (decompression bombs).
pub const MAX_DIMENSION: u32 = 16_384;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/assets/{id}/thumbnail", get(thumbnail))
}

/// Where an asset's thumbnail is cached (images only).
pub(crate) fn thumb_key(row: &AssetRecord) -> Option<StorageKey> {
    if !row.content_type.starts_with("image/") {
        return None;
    }
    StorageKey::new(format!("{}/{}_thumb.jpg", row.user_id, row.id)).ok()
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
        message.into(),
    )
}

/// Decodes `bytes` and renders the thumbnail JPEG.
fn render(bytes: &[u8]) -> ApiResult<Vec<u8>> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unprocessable(format!("cannot read the image: {e}")))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| unprocessable(format!("cannot decode the image: {e}")))?;
    let thumb = image::DynamicImage::ImageRgb8(img.thumbnail(THUMB_SIZE, THUMB_SIZE).to_rgb8());
    let mut out = Cursor::new(Vec::new());
    thumb
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .map_err(|e| {
            ApiError::from(
                nodetool_core::Error::unexpected("thumbnail encoding failed").with_source(e),
            )
        })?;
    Ok(out.into_inner())
}

pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = find(&state, user.as_str(), &id).await?;
    let (Some(source), Some(thumb)) = (row.key(), thumb_key(&row)) else {
        return Err(ApiError::not_found(format!(
            "asset {id} has no thumbnail: only images get one"
        )));
    };
    let storage = state.resources.asset_storage()?;
    if storage.metadata(&thumb).await?.is_none() {
        let meta = storage.require_metadata(&source).await?;
        if meta.size > MAX_SOURCE_BYTES {
            return Err(unprocessable(format!(
                "the image is {} bytes; thumbnails are made for images up to {MAX_SOURCE_BYTES}",
                meta.size
            )));
        }
        let bytes = storage.download_bytes(&source).await?;
        let jpeg = tokio::task::spawn_blocking(move || render(&bytes))
            .await
            .map_err(|e| {
                ApiError::from(
                    nodetool_core::Error::unexpected("thumbnail task failed").with_source(e),
                )
            })??;
        storage
            .upload_bytes(
                &thumb,
                Bytes::from(jpeg),
                PutOptions::content_type("image/jpeg"),
            )
            .await?;
        tracing::debug!(asset = %id, "thumbnail generated");
    }
    serve_object(&state, storage.as_ref(), &thumb, &method, &headers).await
}

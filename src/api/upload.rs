//! `/attach/upload`: fastIM's upload route, for pictures only.
//!
//! The body was read by the event loop as it arrived; here, on a worker, it is
//! checked (session, multipart shape, size, image type by magic bytes), decoded into its
//! thumbnail (refused before decoding if its header claims too many pixels: see
//! [`crate::thumbnail`]), hashed and written, the original and then the thumbnail, both
//! named by their own content. The reply keeps fastIM's shape, `data` the URL of the
//! stored file, and adds `thumb`, `thumbwidth` and `thumbheight`.

use serde::Serialize;

use super::{ApiReply, Failure, MSG_LOGIN_REQUIRED, MSG_SESSION_INVALID, session_user};
use crate::http::Status;
use crate::http::multipart::{self, MultipartError};
use crate::resource::{ImageKind, ResourceDir};
use crate::store::Db;
use crate::thumbnail::{self, ThumbError};

/// What an upload request carries.
#[derive(Debug)]
pub struct Upload {
    /// The session token.
    pub token: String,
    /// `Content-Type`, with the boundary.
    pub content_type: String,
    /// The whole multipart body.
    pub body: Vec<u8>,
    /// Largest accepted file, in bytes.
    pub max_file: usize,
    /// Unix ms.
    pub now_ms: i64,
}

/// Stores an uploaded image and replies with its URL.
pub fn upload(db: &Db, resources: &ResourceDir, req: &Upload) -> ApiReply {
    match run(db, resources, req) {
        Ok(reply) => reply,
        Err(failure) => failure.into_reply(),
    }
}

fn run(db: &Db, resources: &ResourceDir, req: &Upload) -> Result<ApiReply, Failure> {
    if req.token.is_empty() {
        return Err(Failure::Unauthorized(MSG_LOGIN_REQUIRED));
    }
    session_user(db, &req.token, req.now_ms)?.ok_or(Failure::Unauthorized(MSG_SESSION_INVALID))?;
    let boundary = multipart::boundary(&req.content_type).map_err(|_| not_multipart())?;
    let file = match multipart::find_part(&req.body, boundary, "file") {
        Ok(Some(file)) => file,
        Ok(None) => return Err(not_multipart()),
        Err(MultipartError::NotMultipart | MultipartError::Malformed) => {
            return Err(Failure::BadRequest(
                "the multipart body is malformed".into(),
            ));
        }
    };
    if file.len() > req.max_file {
        return Err(Failure::Refused(
            Status::PayloadTooLarge,
            format!(
                "the picture is larger than {} MiB",
                req.max_file / (1024 * 1024)
            ),
        ));
    }
    let Some(kind) = ImageKind::sniff(file) else {
        return Err(Failure::Refused(
            Status::UnsupportedMediaType,
            "only PNG, JPEG, GIF and WebP pictures can be uploaded".into(),
        ));
    };
    let thumb = thumbnail::make(kind, file).map_err(|e| refuse_picture(kind, e))?;
    let stored = |kind, bytes: &[u8]| {
        resources.save(kind, bytes).map_err(|e| {
            log::error!("storing an upload failed: {e}");
            Failure::Internal
        })
    };
    let data = format!("/resource/{}", stored(kind, file)?);
    let thumb_url = match &thumb.encoded {
        Some((kind, bytes)) => format!("/resource/{}", stored(*kind, bytes)?),
        None => data.clone(),
    };
    Ok(ApiReply::json(
        Status::Ok,
        &Stored {
            code: 0,
            msg: "",
            data,
            thumb: thumb_url,
            thumbwidth: thumb.width,
            thumbheight: thumb.height,
        },
    ))
}

/// The reply: fastIM's envelope with the picture's URL in `data`, and its thumbnail.
#[derive(Serialize)]
struct Stored {
    code: i32,
    msg: &'static str,
    data: String,
    thumb: String,
    thumbwidth: u32,
    thumbheight: u32,
}

/// A picture the thumbnail maker will not or cannot decode: nothing is stored.
fn refuse_picture(kind: ImageKind, e: ThumbError) -> Failure {
    match e {
        ThumbError::TooLarge { width, height } => Failure::Refused(
            Status::PayloadTooLarge,
            format!(
                "the picture is too large: {width} x {height} pixels; at most {side} pixels \
                 a side and {mib} MiB decoded (about 16 megapixels)",
                side = thumbnail::MAX_DECODED_SIDE,
                mib = thumbnail::MAX_DECODED_BYTES >> 20,
            ),
        ),
        ThumbError::Undecodable(why) => {
            log::debug!("upload refused, cannot decode its {kind:?}: {why}");
            Failure::Refused(
                Status::UnsupportedMediaType,
                format!(
                    "the picture cannot be read: it is not a valid {} file",
                    kind.ext().to_uppercase()
                ),
            )
        }
    }
}

fn not_multipart() -> Failure {
    Failure::BadRequest("upload the picture as multipart/form-data in a field named file".into())
}

//! `/attach/upload`: fastIM's upload route, for pictures only.
//!
//! The body was read by the event loop as it arrived; here, on a worker, it is
//! checked (session, multipart shape, size, image type by magic bytes), decoded into its
//! thumbnail (refused before decoding if its header claims too many pixels: see
//! [`crate::thumbnail`]), hashed and written, the original and then the thumbnail, both
//! named by their own content. The reply keeps fastIM's shape, `data` the URL of the
//! stored file, and adds `thumb`, `thumbwidth` and `thumbheight`.
//!
//! An upload without a session (fastIM's register page uploads the avatar before the
//! account exists) is taken too, up to [`ANONYMOUS_UPLOAD_MAX`] and at the rate the loop's
//! throttle allows; its files are recorded in the store before they are written, and
//! removed a day later ([`ANONYMOUS_UPLOAD_KEEP_MS`]) unless an account takes them
//! (`store/uploads.rs`). An upload with a session adopts the files it stores, so a
//! picture an account uploaded is never removed.

use serde::Serialize;

use super::{ApiReply, Failure, MSG_SESSION_INVALID, session_user};
use crate::http::Status;
use crate::http::multipart::{self, MultipartError};
use crate::resource::{self, ImageKind, ResourceDir};
use crate::store::{Db, StoreError};
use crate::thumbnail::{self, ThumbError};

/// Largest picture uploaded without a session: 1 MiB (an avatar). A `Content-Length`
/// over this plus [`crate::config::UPLOAD_FRAMING`] is refused before the body is read.
pub const ANONYMOUS_UPLOAD_MAX: usize = 1024 * 1024;

/// How long a picture uploaded without a session is kept unless an account takes it
/// (as its avatar, or by uploading it with a session): a day, in milliseconds.
pub const ANONYMOUS_UPLOAD_KEEP_MS: i64 = 24 * 60 * 60 * 1000;

/// What an upload request carries.
#[derive(Debug)]
pub struct Upload {
    /// The session token; `None` for an upload without a session.
    pub token: Option<String>,
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
pub fn upload(db: &mut Db, resources: &ResourceDir, req: &Upload) -> ApiReply {
    match run(db, resources, req) {
        Ok(reply) => reply,
        Err(failure) => failure.into_reply(),
    }
}

fn run(db: &mut Db, resources: &ResourceDir, req: &Upload) -> Result<ApiReply, Failure> {
    if let Some(token) = &req.token {
        session_user(db, token, req.now_ms)?.ok_or(Failure::Unauthorized(MSG_SESSION_INVALID))?;
    }
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
            too_large(req.max_file, req.token.is_none()),
        ));
    }
    let Some(kind) = ImageKind::sniff(file) else {
        return Err(Failure::Refused(
            Status::UnsupportedMediaType,
            "only PNG, JPEG, GIF and WebP pictures can be uploaded".into(),
        ));
    };
    let thumb = thumbnail::make(kind, file).map_err(|e| refuse_picture(kind, e))?;
    // The picture, then its thumbnail if it has a file of its own.
    let mut files = vec![(resource::name_of(kind, file), file)];
    if let Some((kind, bytes)) = &thumb.encoded {
        files.push((resource::name_of(*kind, bytes), bytes.as_slice()));
    }
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let save = |name: &str| -> std::io::Result<()> {
        match files.iter().find(|(n, _)| n == name) {
            Some((_, bytes)) => resources.save_as(name, bytes),
            None => Ok(()),
        }
    };
    let failed = |e: &dyn std::fmt::Display| {
        log::error!("storing an upload failed: {e}");
        Failure::Internal
    };
    if req.token.is_none() {
        // Recorded before it is written, under the store's lock: an upload of the same
        // picture with a session either finds the row and adopts it, or wrote the file
        // first and this one records nothing (the file is the account's).
        db.record_anonymous_upload(&names, req.now_ms, |name| resources.exists(name))?;
        for name in &names {
            save(name).map_err(|e| failed(&e))?;
        }
    } else {
        for name in &names {
            save(name).map_err(|e| failed(&e))?;
        }
        // Taken by an account: never removed. Under the store's lock a file a sweep
        // removed meanwhile is written again.
        db.adopt_uploads(&names, |name| {
            if resources.exists(name) {
                Ok(())
            } else {
                save(name)
            }
        })
        .map_err(|e| match e {
            StoreError::Io(e) => failed(&e),
            other => other.into(),
        })?;
    }
    let data = format!("/resource/{}", names[0]);
    let thumb_url = format!("/resource/{}", names.last().unwrap_or(&names[0]));
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

/// The `msg` of a picture over `max` bytes.
fn too_large(max: usize, anonymous: bool) -> String {
    let limit = mib(max);
    if anonymous {
        format!(
            "the picture is larger than {limit}, the limit without a session; log in to upload more"
        )
    } else {
        format!("the picture is larger than {limit}")
    }
}

/// `max` bytes as MiB for a message: `1 MiB`, or KiB below a MiB.
pub fn mib(max: usize) -> String {
    if max >= 1024 * 1024 {
        format!("{} MiB", max / (1024 * 1024))
    } else {
        format!("{} KiB", max / 1024)
    }
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

//! `/attach/upload`: fastIM's upload route, for pictures only.
//!
//! The body was read by the event loop as it arrived; here, on a worker, it is
//! checked (session, multipart shape, size, image type by magic bytes), hashed and
//! written. The reply keeps fastIM's shape: `data` is the URL of the stored file.

use super::{ApiReply, Failure, MSG_LOGIN_REQUIRED, MSG_SESSION_INVALID, session_user};
use crate::http::Status;
use crate::http::multipart::{self, MultipartError};
use crate::resource::{ImageKind, ResourceDir};
use crate::store::Db;

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
    let name = resources.save(kind, file).map_err(|e| {
        log::error!("storing an upload failed: {e}");
        Failure::Internal
    })?;
    Ok(ApiReply::data(format!("/resource/{name}")))
}

fn not_multipart() -> Failure {
    Failure::BadRequest("upload the picture as multipart/form-data in a field named file".into())
}

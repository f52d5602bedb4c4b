//! `cmd 20`, sync: every message after the client's last id. The read runs on a
//! worker; the connection decides when (one running, one waiting).
//!
//! With `"batch":true` the reply is one `cmd 25` message holding them all instead
//! of one frame per message and a closing `cmd 23`: a single message that
//! permessage-deflate compresses as a whole (chat JSON shrinks to a tenth or less;
//! one short delivery on its own is under the compression threshold).

use super::{ClientFrame, Produced};

/// `{"cmd":20,"id":57}`, or `{"cmd":20,"id":57,"batch":true}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncAfter {
    /// The last message id the client has seen (0 for everything).
    pub after: i64,
    /// One `cmd 25` reply instead of a frame per message.
    pub batch: bool,
}

impl SyncAfter {
    /// `id`, 0 when absent or negative.
    pub(super) fn parse(frame: &ClientFrame) -> SyncAfter {
        SyncAfter {
            after: frame.id.unwrap_or(0).max(0),
            batch: frame.batch.unwrap_or(false),
        }
    }

    /// A sync read for the connection to start.
    pub fn apply(self) -> Produced {
        Produced::Sync(self)
    }
}

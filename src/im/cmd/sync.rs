//! `cmd 20`, sync: every message after the client's last id. The read runs on a
//! worker; the connection decides when (one running, one waiting).
//!
//! With `"batch":true` the reply is one `cmd 25` message holding them all instead
//! of one frame per message and a closing `cmd 23`: a single message that
//! permessage-deflate compresses as a whole (chat JSON shrinks to a tenth or less;
//! one short delivery on its own is under the compression threshold).
//!
//! With `"changes":<seq>` the reply also carries the recalls and edits after that
//! place in the change log (`store/changes.rs`), as their live events, and the
//! closing frame says the `seq` to ask from next time. Without it (fastIM's client)
//! the reply is as it always was.

use super::{ClientFrame, Produced};

/// `{"cmd":20,"id":57}`, or `{"cmd":20,"id":57,"batch":true,"changes":12}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncAfter {
    /// The last message id the client has seen (0 for everything).
    pub after: i64,
    /// One `cmd 25` reply instead of a frame per message.
    pub batch: bool,
    /// The last change `seq` the client has seen (0 for every change), or `None`: no
    /// changes wanted.
    pub changes: Option<i64>,
}

impl SyncAfter {
    /// `id`, 0 when absent or negative; `changes` likewise, when present.
    pub(super) fn parse(frame: &ClientFrame) -> SyncAfter {
        SyncAfter {
            after: frame.id.unwrap_or(0).max(0),
            batch: frame.batch.unwrap_or(false),
            changes: frame.changes.map(|seq| seq.max(0)),
        }
    }

    /// A sync read for the connection to start.
    pub fn apply(self) -> Produced {
        Produced::Sync(self)
    }
}

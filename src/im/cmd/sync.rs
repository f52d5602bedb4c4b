//! `cmd 20`, sync: every message after the client's last id. The read runs on a
//! worker; the connection decides when (one running, one waiting).

use super::{ClientFrame, Produced};

/// `{"cmd":20,"id":57}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncAfter {
    /// The last message id the client has seen (0 for everything).
    pub after: i64,
}

impl SyncAfter {
    /// `id`, 0 when absent or negative.
    pub(super) fn parse(frame: &ClientFrame) -> SyncAfter {
        SyncAfter {
            after: frame.id.unwrap_or(0).max(0),
        }
    }

    /// A sync read for the connection to start.
    pub fn apply(self) -> Produced {
        Produced::Sync(self.after)
    }
}

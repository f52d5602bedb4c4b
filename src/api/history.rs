//! `/message/history`: pages of a conversation, newest first.

use super::contacts::{MSG_NO_SUCH_GROUP, MSG_NOT_MEMBER};
use super::fields::Fields;
use super::{ApiReply, Caller, Failure, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT};
use crate::im::cmd::code::{GROUP, SINGLE};
use crate::im::wire::SeenBy;
use crate::store::{Db, Peer, StoreError};

/// `/message/history` (`dstid`, `cmd`, optional `before`, optional `limit`).
///
/// `cmd` 10: the 1:1 messages between the caller and user `dstid`, whoever that is (only
/// the caller's own conversation can come back). `cmd` 11: group `dstid`'s messages since
/// the caller joined, for members only. `limit` defaults to
/// [`HISTORY_DEFAULT_LIMIT`] and is cut to [`HISTORY_MAX_LIMIT`]. The reply's `oldest`
/// is where history starts ([`Db::history_start`]): nothing older than it will come
/// back, whatever `before` asks.
pub(super) fn history(db: &Db, caller: &Caller<'_>, fields: &Fields) -> Result<ApiReply, Failure> {
    let dst = fields.required_int("dstid")?;
    let peer = match fields.int("cmd") {
        Ok(Some(SINGLE)) => Peer::User(dst),
        Ok(Some(GROUP)) => Peer::Group(dst),
        Ok(None) => return Err(Failure::field("cmd is required")),
        Ok(Some(_)) | Err(Failure::App(_)) => {
            return Err(Failure::field("cmd must be 10 (one-to-one) or 11 (group)"));
        }
        Err(other) => return Err(other),
    };
    let before = match fields.int("before")? {
        Some(b) if b > 0 => Some(b),
        Some(_) => return Err(Failure::field("before must be a positive message id")),
        None => None,
    };
    let limit = match fields.int("limit")? {
        None => HISTORY_DEFAULT_LIMIT,
        Some(n) if n >= 1 => {
            usize::try_from(n).map_or(HISTORY_MAX_LIMIT, |n| n.min(HISTORY_MAX_LIMIT))
        }
        Some(_) => {
            return Err(Failure::field(format!(
                "limit must be at least 1 (at most {HISTORY_MAX_LIMIT} are returned)"
            )));
        }
    };
    let messages = db
        .history(caller.id, peer, before, limit)
        .map_err(|e| match e {
            StoreError::NoSuchGroup => Failure::field(MSG_NO_SUCH_GROUP),
            StoreError::NotMember => Failure::field(MSG_NOT_MEMBER),
            other => other.into(),
        })?;
    // Read after the rows, as sync does: retention in between only moves it later.
    let oldest = db.history_start()?;
    // History rows are the chat wire's deliveries: one format for both, with the
    // `ref` of the caller's own messages.
    let rows: Vec<SeenBy<'_>> = messages
        .iter()
        .map(|message| SeenBy {
            message,
            reader: caller.id,
        })
        .collect();
    Ok(ApiReply::rows_from(&rows, Some(oldest)))
}

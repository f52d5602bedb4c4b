//! Friendship by consent: `/contact/addfriend` asks, the addressee accepts or
//! declines; either side may remove the friend later; anyone may block anyone.
//!
//! Each change that concerns someone else is told to them on the socket as a `cmd 30`
//! event (`im/events.rs`), and what it changes for the loop's send rights and presence
//! comes back as an [`Effect`]. With `--instant-friends` `/contact/addfriend` makes
//! the two friends at once, as fastIM did.

use serde::Serialize;

use super::fields::Fields;
use super::json::PublicProfile;
use super::{ApiReply, Caller, Effect, Failure, MSG_SESSION_INVALID};
use crate::http::Status;
use crate::im::events::ContactEvent;
use crate::store::{Dated, Db, RequestOutcome, StoreError, User};

/// Most friend requests one user may have waiting for an answer.
pub const MAX_PENDING_REQUESTS: usize = 100;

/// What `/contact/addfriend` says when a request was made (or was waiting already).
pub const MSG_REQUEST_SENT: &str = "request sent";

/// `data` of `/contact/addfriend` without `--instant-friends`.
#[derive(Serialize)]
struct AddFriendData<'a> {
    /// `requested` (waiting for the other's answer) or `friends`.
    status: &'static str,
    user: PublicProfile<'a>,
    /// When the request was made, for `requested`.
    #[serde(skip_serializing_if = "Option::is_none")]
    createat: Option<i64>,
}

/// A listed user with the time of the request or block.
#[derive(Serialize)]
struct DatedRow<'a> {
    user: PublicProfile<'a>,
    createat: i64,
}

impl<'a> From<&'a Dated> for DatedRow<'a> {
    fn from(d: &'a Dated) -> Self {
        DatedRow {
            user: PublicProfile::from(&d.user),
            createat: d.at,
        }
    }
}

/// `data` of `/contact/requests`.
#[derive(Serialize)]
struct RequestLists<'a> {
    incoming: Vec<DatedRow<'a>>,
    outgoing: Vec<DatedRow<'a>>,
}

/// `u`'s public profile as a JSON value, for an event.
pub(super) fn profile(u: &User) -> serde_json::Value {
    serde_json::to_value(PublicProfile::from(u)).unwrap_or_default()
}

/// The caller's own user.
fn me(db: &Db, caller: &Caller<'_>) -> Result<User, Failure> {
    db.user_by_id(caller.id)?
        .ok_or(Failure::Unauthorized(MSG_SESSION_INVALID))
}

/// The other user of a request: `dstid` (an id) or else `dstname` (a mobile number,
/// what fastIM's client sends). Names the missing field when neither is given.
fn target(db: &Db, fields: &Fields) -> Result<User, Failure> {
    if let Some(id) = fields.int("dstid")? {
        return db
            .user_by_id(id)?
            .ok_or_else(|| Failure::field("no such user"));
    }
    let mobile = fields.trimmed("dstname")?.ok_or_else(|| {
        Failure::field("dstid (a user id) or dstname (a mobile number) is required")
    })?;
    db.user_by_mobile(mobile)?
        .ok_or_else(|| Failure::field("no user has this mobile number"))
}

/// A reply that makes `a` and `b` friends: the index learns it, and both are told.
fn befriended(reply: ApiReply, a: &User, b: &User) -> ApiReply {
    reply
        .with_effect(Effect::Befriended {
            user: a.id,
            friend: b.id,
        })
        .notify(vec![a.id], ContactEvent::FriendAdded { user: profile(b) })
        .notify(vec![b.id], ContactEvent::FriendAdded { user: profile(a) })
}

/// `/contact/addfriend`: asks the user with mobile number `dstname` or id `dstid` to
/// be friends; if they had asked the caller already, the two are friends at once.
/// With `--instant-friends`, befriends at once as fastIM did.
pub(super) fn add_friend(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
    now: i64,
    instant: bool,
) -> Result<ApiReply, Failure> {
    let other = target(db, fields)?;
    let me = me(db, caller)?;
    let refused = |e: StoreError| match e {
        StoreError::SelfFriend => Failure::field("you cannot add yourself as a friend"),
        StoreError::AlreadyFriends => Failure::field("you are already friends"),
        StoreError::NoSuchUser => Failure::Unauthorized(MSG_SESSION_INVALID),
        StoreError::TooManyRequests { .. } => {
            Failure::Refused(Status::TooManyRequests, e.to_string())
        }
        other => other.into(),
    };
    if instant {
        db.add_friend(me.id, other.id, now).map_err(refused)?;
        let reply = ApiReply::data_with_msg("friend added", PublicProfile::from(&other));
        return Ok(befriended(reply, &me, &other));
    }
    let outcome = db
        .request_friend(me.id, other.id, now, MAX_PENDING_REQUESTS)
        .map_err(refused)?;
    Ok(match outcome {
        RequestOutcome::Befriended => {
            let data = AddFriendData {
                status: "friends",
                user: PublicProfile::from(&other),
                createat: None,
            };
            befriended(
                ApiReply::data_with_msg("they had asked you too: you are now friends", data),
                &me,
                &other,
            )
        }
        RequestOutcome::Requested(at) => ApiReply::data_with_msg(
            MSG_REQUEST_SENT,
            AddFriendData {
                status: "requested",
                user: PublicProfile::from(&other),
                createat: Some(at),
            },
        )
        .notify(
            vec![other.id],
            ContactEvent::FriendRequest {
                user: profile(&me),
                createat: at,
            },
        )
        .notify(
            vec![me.id],
            ContactEvent::RequestSent {
                user: profile(&other),
                createat: at,
            },
        ),
        // Asked before: nobody is told again.
        RequestOutcome::AlreadyRequested(at) => ApiReply::data_with_msg(
            MSG_REQUEST_SENT,
            AddFriendData {
                status: "requested",
                user: PublicProfile::from(&other),
                createat: Some(at),
            },
        ),
    })
}

/// `/contact/requests`: the requests waiting for the caller and the caller's own.
pub(super) fn requests(db: &Db, caller: &Caller<'_>) -> Result<ApiReply, Failure> {
    let r = db.friend_requests(caller.id)?;
    Ok(ApiReply::data(RequestLists {
        incoming: r.incoming.iter().map(DatedRow::from).collect(),
        outgoing: r.outgoing.iter().map(DatedRow::from).collect(),
    }))
}

/// The requester, `dstid`, of `/contact/accept` and `/contact/decline`.
fn requester(db: &Db, fields: &Fields) -> Result<User, Failure> {
    let id = fields.required_int("dstid")?;
    db.user_by_id(id)?
        .ok_or_else(|| Failure::field("no such user"))
}

const MSG_NO_REQUEST: &str = "this user has no friend request waiting for you";

/// `/contact/accept`: accepts the request of `dstid`.
pub(super) fn accept(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
    now: i64,
) -> Result<ApiReply, Failure> {
    let other = requester(db, fields)?;
    let me = me(db, caller)?;
    db.accept_request(me.id, other.id, now)
        .map_err(|e| match e {
            StoreError::NoSuchRequest => Failure::field(MSG_NO_REQUEST),
            other => other.into(),
        })?;
    let reply = ApiReply::data_with_msg("you are now friends", PublicProfile::from(&other));
    Ok(befriended(reply, &me, &other))
}

/// `/contact/decline`: declines the request of `dstid`; they are told, and may ask again.
pub(super) fn decline(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
) -> Result<ApiReply, Failure> {
    let other = requester(db, fields)?;
    db.decline_request(caller.id, other.id)
        .map_err(|e| match e {
            StoreError::NoSuchRequest => Failure::field(MSG_NO_REQUEST),
            other => other.into(),
        })?;
    Ok(ApiReply::done("request declined")
        .notify(
            vec![other.id],
            ContactEvent::RequestDeclined { userid: caller.id },
        )
        .notify(
            vec![caller.id],
            ContactEvent::RequestDeclined { userid: other.id },
        ))
}

/// `/contact/cancelrequest`: withdraws the caller's own request to `dstid`; they are told.
pub(super) fn cancel(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
) -> Result<ApiReply, Failure> {
    let other = fields.required_int("dstid")?;
    db.cancel_request(caller.id, other).map_err(|e| match e {
        StoreError::NoSuchRequest => {
            Failure::field("you have no friend request waiting for this user")
        }
        other => other.into(),
    })?;
    Ok(ApiReply::done("request withdrawn")
        .notify(
            vec![other],
            ContactEvent::RequestWithdrawn { userid: caller.id },
        )
        .notify(
            vec![caller.id],
            ContactEvent::RequestWithdrawn { userid: other },
        ))
}

/// `/contact/removefriend`: ends the friendship with `dstid`; both are told.
pub(super) fn remove_friend(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
) -> Result<ApiReply, Failure> {
    let friend = fields.required_int("dstid")?;
    db.remove_friend(caller.id, friend).map_err(|e| match e {
        StoreError::NotFriends => Failure::field("this user is not your friend"),
        other => other.into(),
    })?;
    Ok(ApiReply::done("friend removed")
        .with_effect(Effect::Unfriended {
            a: caller.id,
            b: friend,
        })
        .notify(
            vec![caller.id],
            ContactEvent::FriendRemoved { userid: friend },
        )
        .notify(
            vec![friend],
            ContactEvent::FriendRemoved { userid: caller.id },
        ))
}

/// `/contact/block`: blocks `dstid` (or the user with mobile number `dstname`). The
/// friendship and the requests between the two end; the blocked user is not told of
/// the block (only that the friendship or the caller's request is gone), the
/// caller's own devices are.
pub(super) fn block(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
    now: i64,
) -> Result<ApiReply, Failure> {
    let other = target(db, fields)?;
    let o = db.block(caller.id, other.id, now).map_err(|e| match e {
        StoreError::SelfFriend => Failure::field("you cannot block yourself"),
        StoreError::NoSuchUser => Failure::Unauthorized(MSG_SESSION_INVALID),
        other => other.into(),
    })?;
    let mut reply = ApiReply::data_with_msg("user blocked", PublicProfile::from(&other))
        .with_effect(Effect::Blocked {
            blocker: caller.id,
            blocked: other.id,
            on: true,
        });
    if o.were_friends {
        reply = reply.notify(
            vec![other.id],
            ContactEvent::FriendRemoved { userid: caller.id },
        );
    }
    if o.withdrew_request {
        reply = reply.notify(
            vec![other.id],
            ContactEvent::RequestWithdrawn { userid: caller.id },
        );
    }
    if o.new {
        reply = reply.notify(
            vec![caller.id],
            ContactEvent::Blocked {
                user: profile(&other),
            },
        );
    }
    Ok(reply)
}

/// `/contact/unblock`: lifts the block of `dstid`.
pub(super) fn unblock(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
) -> Result<ApiReply, Failure> {
    let other = fields.required_int("dstid")?;
    if !db.unblock(caller.id, other)? {
        return Err(Failure::field("this user is not blocked"));
    }
    Ok(ApiReply::done("user unblocked")
        .with_effect(Effect::Blocked {
            blocker: caller.id,
            blocked: other,
            on: false,
        })
        .notify(vec![caller.id], ContactEvent::Unblocked { userid: other }))
}

/// `/contact/blocked`: the users the caller blocked, newest first.
pub(super) fn blocked(db: &Db, caller: &Caller<'_>) -> Result<ApiReply, Failure> {
    let list = db.blocked_users(caller.id)?;
    let rows: Vec<DatedRow<'_>> = list.iter().map(DatedRow::from).collect();
    Ok(ApiReply::rows(&rows))
}

//! The owner's group routes (`/contact/updatecommunity`, `/contact/removemember`,
//! `/contact/transfercommunity`) and the [`GroupChange`] every membership or group change
//! hands to the loop: the stored notices to deliver, and the memberships to update.
//!
//! These routes are fastim's own (fastIM's client never calls them), so they answer with
//! real HTTP statuses: 400 for a bad field, 403 for a caller who is not the owner, 404 for
//! an unknown group or member, 409 for a taken name.

use super::fields::{self, Fields};
use super::json::Community;
use super::users::AVATAR_MAX;
use super::{ApiReply, Caller, Effect, Failure};
use crate::http::Status;
use crate::im::events::ContactEvent;
use crate::store::{Db, Group, GroupChanged, GroupUpdate, Message, StoreError};

/// Longest group name, in characters (as at creation).
pub(super) const GROUP_NAME_MAX: usize = 30;
/// Longest group memo, in characters (as at creation).
pub(super) const GROUP_MEMO_MAX: usize = 120;

/// What a group change asks of the loop, applied in this order: `joined` becomes a
/// member in the index; the `notices` go to the group's online connections (as a group
/// delivery, each frame shared); `left` stops being a member (so a removed member still
/// gets the notice of its removal, and nothing after it); `deleted` removes the group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupChange {
    /// The group.
    pub group: i64,
    /// A user who became a member.
    pub joined: Option<i64>,
    /// The stored notices, in id order.
    pub notices: Vec<Message>,
    /// A user who is no longer a member (left or removed).
    pub left: Option<i64>,
    /// The group was deleted with its last member.
    pub deleted: bool,
}

impl GroupChange {
    /// As an [`Effect`].
    pub(super) fn effect(self) -> Effect {
        Effect::Group(Box::new(self))
    }
}

/// The Community JSON of `g`, for an event.
pub(super) fn community(g: &Group) -> serde_json::Value {
    serde_json::to_value(Community::from(g)).unwrap_or_default()
}

/// `group_updated` with `g` as it is now, for every member of it. The change is
/// committed already: if the members cannot be read (the group was deleted meanwhile,
/// or the database failed) the reply stands and nobody is told.
pub(super) fn updated(db: &Db, reply: ApiReply, g: &Group) -> ApiReply {
    let members = match db.members(g.id) {
        Ok(members) => members.into_iter().map(|m| m.user.id).collect(),
        Err(e) => {
            log::warn!("api: group {} changed, its members not told: {e}", g.id);
            return reply;
        }
    };
    reply.notify(
        members,
        ContactEvent::GroupUpdated {
            group: community(g),
        },
    )
}

/// The reply to an owner's change of group `g` (now as it is): `msg` with the group,
/// its notices posted in the conversation, and `group_updated` for every member.
fn changed(db: &Db, msg: &str, g: &Group, notices: Vec<Message>) -> ApiReply {
    let reply = ApiReply::data_with_msg(msg, Community::from(g)).with_effect(
        GroupChange {
            group: g.id,
            notices,
            ..GroupChange::default()
        }
        .effect(),
    );
    updated(db, reply, g)
}

/// A field failure of these routes is a 400 (not fastIM's 200 with `code` -1).
fn bad(f: Failure) -> Failure {
    match f {
        Failure::App(msg) => Failure::Refused(Status::BadRequest, msg),
        other => other,
    }
}

fn forbidden(msg: &str) -> Failure {
    Failure::Refused(Status::Forbidden, msg.to_owned())
}

fn not_found(msg: &str) -> Failure {
    Failure::Refused(Status::NotFound, msg.to_owned())
}

/// The store's refusals as these routes' statuses; `what` ends "only the group's owner
/// may …".
fn refusal(e: StoreError, what: &str) -> Failure {
    match e {
        StoreError::NoSuchGroup => not_found("no such group"),
        StoreError::NotMember => forbidden("you are not a member of this group"),
        StoreError::NotOwner => forbidden(&format!("only the group's owner may {what}")),
        StoreError::NoSuchMember => not_found("this user is not a member of the group"),
        StoreError::GroupNameTaken => Failure::Refused(
            Status::Conflict,
            "a group with this name already exists; choose another name".to_owned(),
        ),
        other => other.into(),
    }
}

/// `dstid` (the group) and, when `member` is asked, `memberid`, as integers.
fn ids(fields: &Fields, member: bool) -> Result<(i64, i64), Failure> {
    let group = fields.required_int("dstid").map_err(bad)?;
    let user = if member {
        fields.required_int("memberid").map_err(bad)?
    } else {
        0
    };
    Ok((group, user))
}

/// `/contact/updatecommunity`: the owner renames group `dstid` (`name`) or changes its
/// `icon` or `memo`; absent fields stay as they are, at least one must be given.
pub(super) fn update(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
    now: i64,
) -> Result<ApiReply, Failure> {
    let (group, _) = ids(fields, false)?;
    let update = GroupUpdate {
        name: fields::name(fields, "name", GROUP_NAME_MAX).map_err(bad)?,
        icon: fields::text_at_most(fields, "icon", AVATAR_MAX).map_err(bad)?,
        memo: fields::text_at_most(fields, "memo", GROUP_MEMO_MAX).map_err(bad)?,
    };
    if update == GroupUpdate::default() {
        return Err(bad(Failure::field(
            "nothing to change: give name, icon or memo",
        )));
    }
    let GroupChanged { group: g, notices } = db
        .update_group(caller.id, group, update, now)
        .map_err(|e| refusal(e, "change the group"))?;
    Ok(changed(db, "group updated", &g, notices))
}

/// `/contact/removemember`: the owner removes user `memberid` from group `dstid`.
pub(super) fn remove(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
    now: i64,
) -> Result<ApiReply, Failure> {
    let (group, member) = ids(fields, true)?;
    let notice = db
        .remove_member(caller.id, group, member, now)
        .map_err(|e| match e {
            StoreError::OwnerItself => bad(Failure::field(
                "you cannot remove yourself; leave the group instead",
            )),
            other => refusal(other, "remove members"),
        })?;
    Ok(ApiReply::done("member removed")
        .with_effect(
            GroupChange {
                group,
                notices: vec![notice],
                left: Some(member),
                ..GroupChange::default()
            }
            .effect(),
        )
        .notify(
            vec![member],
            ContactEvent::MemberRemoved {
                groupid: group,
                by: caller.id,
            },
        ))
}

/// `/contact/transfercommunity`: the owner makes member `memberid` the owner of group
/// `dstid` and stays a member.
pub(super) fn transfer(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
    now: i64,
) -> Result<ApiReply, Failure> {
    let (group, member) = ids(fields, true)?;
    let GroupChanged { group: g, notices } = db
        .transfer_group(caller.id, group, member, now)
        .map_err(|e| match e {
            StoreError::OwnerItself => bad(Failure::field("you own this group already")),
            other => refusal(other, "transfer the group"),
        })?;
    Ok(changed(db, "ownership transferred", &g, notices))
}

//! `/contact/*`: friends and groups (fastIM's "communities").

use super::fields::{self, Fields};
use super::groups::{self, GROUP_MEMO_MAX, GROUP_NAME_MAX, GroupChange};
use super::json::{Community, MemberRow, PublicProfile, WithUnread};
use super::users::AVATAR_MAX;
use super::{ApiReply, Caller, Effect, Failure, MAX_GROUPS_OWNED, MSG_SESSION_INVALID};
use crate::im::events::ContactEvent;
use crate::store::{Db, Group, LeaveOutcome, NewGroup, Peer, StoreError};

pub(super) const MSG_NO_SUCH_GROUP: &str = "no such group";
pub(super) const MSG_NOT_MEMBER: &str = "you are not a member of this group";

/// `/contact/loadfriend`: the caller's friends, public profiles only (fastIM leaked
/// their tokens and mobile numbers, FASTIM.md §1.9 item 3).
pub(super) fn load_friends(db: &Db, caller: &Caller<'_>) -> Result<ApiReply, Failure> {
    let friends = db.friends(caller.id)?;
    let unread = db.unread_counts(caller.id)?;
    let rows: Vec<WithUnread<PublicProfile<'_>>> = friends
        .iter()
        .map(|f| WithUnread {
            row: PublicProfile::from(f),
            unread: unread.get(&Peer::User(f.id)).copied().unwrap_or(0),
        })
        .collect();
    Ok(ApiReply::rows(&rows))
}

/// `/contact/createcommunity`: creates a group owned by the caller, who becomes its first
/// member.
pub(super) fn create_group(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
    now: i64,
) -> Result<ApiReply, Failure> {
    let new = NewGroup {
        name: fields::required_name(fields, "name", GROUP_NAME_MAX)?,
        icon: fields::text_at_most(fields, "icon", AVATAR_MAX)?.unwrap_or_default(),
        cate: fields::cate(fields)?.unwrap_or(0),
        memo: fields::text_at_most(fields, "memo", GROUP_MEMO_MAX)?.unwrap_or_default(),
    };
    let group = db
        .create_group(caller.id, new, MAX_GROUPS_OWNED, now)
        .map_err(|e| match e {
            StoreError::GroupNameTaken => {
                Failure::field("a group with this name already exists; choose another name")
            }
            StoreError::TooManyGroups { max } => {
                Failure::field(format!("you can own at most {max} groups"))
            }
            StoreError::NoSuchUser => Failure::Unauthorized(MSG_SESSION_INVALID),
            other => other.into(),
        })?;
    Ok(ApiReply::data(Community::from(&group))
        .with_effect(Effect::Joined {
            user: caller.id,
            group: group.id,
        })
        .notify(
            vec![caller.id],
            ContactEvent::GroupJoined {
                group: groups::community(&group),
            },
        ))
}

/// The group named by `dstid` (an id) or else `dstname` (an exact name, what fastIM's
/// client sends).
fn target_group(db: &Db, fields: &Fields) -> Result<Group, Failure> {
    if let Some(id) = fields.int("dstid")? {
        return db
            .group_by_id(id)?
            .ok_or_else(|| Failure::field(MSG_NO_SUCH_GROUP));
    }
    let name = fields
        .trimmed("dstname")?
        .ok_or_else(|| Failure::field("dstname (the name of the group to join) is required"))?;
    db.group_by_name(name)?
        .ok_or_else(|| Failure::field("no group has this name"))
}

/// `/contact/joincommunity`: joins a group by name or id.
pub(super) fn join_group(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
    now: i64,
) -> Result<ApiReply, Failure> {
    let group = target_group(db, fields)?;
    let notice = db
        .join_group_noticed(caller.id, group.id, now)
        .map_err(|e| match e {
            StoreError::AlreadyMember => Failure::field("you are already a member of this group"),
            StoreError::NoSuchGroup => Failure::field(MSG_NO_SUCH_GROUP),
            StoreError::NoSuchUser => Failure::Unauthorized(MSG_SESSION_INVALID),
            other => other.into(),
        })?;
    // The joiner's devices learn the group before its first message, the notice.
    Ok(
        ApiReply::data_with_msg("you joined the group", Community::from(&group))
            .notify(
                vec![caller.id],
                ContactEvent::GroupJoined {
                    group: groups::community(&group),
                },
            )
            .with_effect(
                GroupChange {
                    group: group.id,
                    joined: Some(caller.id),
                    notices: vec![notice],
                    ..GroupChange::default()
                }
                .effect(),
            ),
    )
}

/// `/contact/leavecommunity`: leaves group `dstid`. An owner hands the group to the
/// longest-standing member; the last member's leaving deletes it.
pub(super) fn leave_group(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
    now: i64,
) -> Result<ApiReply, Failure> {
    let group = fields.required_int("dstid")?;
    let (outcome, notices) =
        db.leave_group_noticed(caller.id, group, now)
            .map_err(|e| match e {
                StoreError::NoSuchGroup => Failure::field(MSG_NO_SUCH_GROUP),
                StoreError::NotMember => Failure::field(MSG_NOT_MEMBER),
                other => other.into(),
            })?;
    let msg = match outcome {
        LeaveOutcome::Left => "you left the group",
        LeaveOutcome::OwnershipTransferred { .. } => {
            "you left the group; the member who joined first now owns it"
        }
        LeaveOutcome::GroupDeleted => "you left the group; it had no other members and was deleted",
    };
    let reply = ApiReply::done(msg)
        .with_effect(
            GroupChange {
                group,
                notices,
                left: Some(caller.id),
                deleted: outcome == LeaveOutcome::GroupDeleted,
                ..GroupChange::default()
            }
            .effect(),
        )
        .notify(vec![caller.id], ContactEvent::GroupLeft { groupid: group });
    match (outcome, db.group_by_id(group)?) {
        // The remaining members learn their new owner.
        (LeaveOutcome::OwnershipTransferred { .. }, Some(g)) => Ok(groups::updated(db, reply, &g)),
        _ => Ok(reply),
    }
}

/// `/contact/loadcommunity`: the caller's groups.
pub(super) fn load_groups(db: &Db, caller: &Caller<'_>) -> Result<ApiReply, Failure> {
    let groups = db.groups_of(caller.id)?;
    let unread = db.unread_counts(caller.id)?;
    let rows: Vec<WithUnread<Community<'_>>> = groups
        .iter()
        .map(|g| WithUnread {
            row: Community::from(g),
            unread: unread.get(&Peer::Group(g.id)).copied().unwrap_or(0),
        })
        .collect();
    Ok(ApiReply::rows(&rows))
}

/// `/contact/members`: the members of group `dstid`, for its members only.
pub(super) fn members(db: &Db, caller: &Caller<'_>, fields: &Fields) -> Result<ApiReply, Failure> {
    let group = fields.required_int("dstid")?;
    if db.group_by_id(group)?.is_none() {
        return Err(Failure::field(MSG_NO_SUCH_GROUP));
    }
    if !db.is_member(group, caller.id)? {
        return Err(Failure::field(MSG_NOT_MEMBER));
    }
    let members = db.members(group).map_err(|e| match e {
        StoreError::NoSuchGroup => Failure::field(MSG_NO_SUCH_GROUP),
        other => other.into(),
    })?;
    let markers: std::collections::HashMap<i64, i64> =
        db.group_markers(group)?.into_iter().collect();
    let rows: Vec<MemberRow<'_>> = members
        .iter()
        .map(|m| {
            let mut row = MemberRow::from(m);
            row.read = markers.get(&m.user.id).copied().unwrap_or(0);
            row
        })
        .collect();
    Ok(ApiReply::rows(&rows))
}

/// `/contact/conversations`: the caller's friends and groups as one list, newest
/// activity first, each with its last message's preview and time, the unread count
/// and the read markers (`store/reads.rs`).
pub(super) fn conversations(db: &Db, caller: &Caller<'_>) -> Result<ApiReply, Failure> {
    Ok(ApiReply::rows(&db.conversations(caller.id)?))
}

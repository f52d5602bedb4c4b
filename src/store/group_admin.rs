//! Managing a group: the owner renames it, changes its icon or memo, removes a member or
//! hands the group to another member; and the notices every membership or group change
//! leaves in the group's conversation.
//!
//! A notice is a stored group message (`cmd` 11) with `media` [`NOTICE`], sent by the user
//! who made the change, whose `content` is a small JSON object (PROTOCOL.md "Group
//! notices"). It is written by the same transaction as the change, so it has its place in
//! id order among the chat messages, in history and in sync, and a change is never stored
//! without its notice or the other way round. Clients cannot send `media` 100 (the socket
//! accepts 1 to 99), so a notice always comes from the server.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::groups::{GROUP_COLUMNS, Group, LeaveOutcome, Role, group_from_row, leave_in};
use super::messages::index_recent;
use super::{Db, Message, Peer, Result, StoreError, taken_or};
use crate::im::cmd::code::GROUP;

/// The `media` of a group notice.
pub const NOTICE: i64 = 100;

/// What a group notice says, as its `content` JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "lowercase")]
pub enum Notice {
    /// `userid` joined.
    Joined {
        /// Who joined.
        userid: i64,
        /// Their nickname at the time.
        nickname: String,
    },
    /// `userid` left.
    Left {
        /// Who left.
        userid: i64,
        /// Their nickname at the time.
        nickname: String,
    },
    /// The owner `by` removed `userid`.
    Removed {
        /// Who was removed.
        userid: i64,
        /// Their nickname at the time.
        nickname: String,
        /// The owner.
        by: i64,
        /// The owner's nickname.
        bynickname: String,
    },
    /// The owner `by` renamed the group from `old` to `name`.
    Renamed {
        /// The new name.
        name: String,
        /// The name before.
        old: String,
        /// The owner.
        by: i64,
        /// The owner's nickname.
        bynickname: String,
    },
    /// The owner `by` set the group's icon to `icon`.
    Icon {
        /// The new icon URL.
        icon: String,
        /// The owner.
        by: i64,
        /// The owner's nickname.
        bynickname: String,
    },
    /// `userid` now owns the group: `by` transferred it, or left it as owner.
    Owner {
        /// The new owner.
        userid: i64,
        /// Their nickname.
        nickname: String,
        /// The owner before.
        by: i64,
        /// Their nickname.
        bynickname: String,
    },
}

impl Notice {
    /// The sentence a client shows for the notice (also the conversation list's
    /// preview): "Ann joined", "Bob was removed by Ann", …
    pub fn sentence(&self) -> String {
        match self {
            Notice::Joined { nickname, .. } => format!("{nickname} joined"),
            Notice::Left { nickname, .. } => format!("{nickname} left"),
            Notice::Removed {
                nickname,
                bynickname,
                ..
            } => format!("{nickname} was removed by {bynickname}"),
            Notice::Renamed {
                name, bynickname, ..
            } => format!("{bynickname} renamed the group to {name}"),
            Notice::Icon { bynickname, .. } => format!("{bynickname} changed the group icon"),
            Notice::Owner {
                nickname,
                bynickname,
                ..
            } => format!("{bynickname} made {nickname} the owner"),
        }
    }
}

/// The sentence of a stored notice's `content`, or `None` if it is not a notice's JSON.
pub fn notice_sentence(content: &str) -> Option<String> {
    serde_json::from_str::<Notice>(content)
        .ok()
        .map(|n| n.sentence())
}

/// The owner's changes to a group; `None` leaves a field as it is. The caller validates
/// the values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupUpdate {
    /// New unique name.
    pub name: Option<String>,
    /// New icon URL.
    pub icon: Option<String>,
    /// New description.
    pub memo: Option<String>,
}

/// A group changed by its owner, with the notices written for it (in id order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupChanged {
    /// The group after the change.
    pub group: Group,
    /// The stored notices.
    pub notices: Vec<Message>,
}

/// The nickname of user `id` ("" if there is no such user).
fn nickname(tx: &Transaction<'_>, id: i64) -> Result<String> {
    Ok(tx
        .prepare_cached("SELECT nickname FROM users WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?
        .unwrap_or_default())
}

/// Stores `notice` in `group`'s conversation, sent by `by`, at `now`.
fn insert_notice(
    tx: &Transaction<'_>,
    group: i64,
    by: i64,
    notice: &Notice,
    now: i64,
) -> Result<Message> {
    let content = serde_json::to_string(notice).unwrap_or_default();
    let id: i64 = tx
        .prepare_cached(
            "INSERT INTO messages (sender_id, cmd, dst_id, media, content, created_at)
             VALUES (?1, 11, ?2, ?3, ?4, ?5)
             RETURNING id",
        )?
        .query_row(params![by, group, NOTICE, content, now], |row| row.get(0))?;
    index_recent(tx, &mut [[by, GROUP, group, id]])?;
    Ok(Message {
        id,
        media: NOTICE,
        content,
        created_at: now,
        ..Message::new(by, Peer::Group(group))
    })
}

/// The group, checked to exist and to be owned by `actor`.
///
/// # Errors
/// [`StoreError::NoSuchGroup`]; [`StoreError::NotMember`] if `actor` is not a member;
/// [`StoreError::NotOwner`] if a member but not the owner.
fn owned_group(tx: &Transaction<'_>, actor: i64, group: i64) -> Result<Group> {
    let sql = format!("SELECT {GROUP_COLUMNS} FROM chat_groups g WHERE g.id = ?1");
    let found = tx
        .prepare_cached(&sql)?
        .query_row([group], group_from_row)
        .optional()?
        .ok_or(StoreError::NoSuchGroup)?;
    match role(tx, group, actor)? {
        Some(Role::Owner) => Ok(found),
        Some(Role::Member) => Err(StoreError::NotOwner),
        None => Err(StoreError::NotMember),
    }
}

/// `user`'s role in `group`, or `None` if not a member.
fn role(tx: &Transaction<'_>, group: i64, user: i64) -> Result<Option<Role>> {
    let role: Option<String> = tx
        .prepare_cached("SELECT role FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
        .query_row([group, user], |row| row.get(0))
        .optional()?;
    Ok(role.map(|r| {
        if r == "owner" {
            Role::Owner
        } else {
            Role::Member
        }
    }))
}

impl Db {
    /// [`Db::join_group`], and the "joined" notice in the same transaction (after the
    /// membership, so the new member receives it).
    ///
    /// # Errors
    /// As [`Db::join_group`].
    pub fn join_group_noticed(&mut self, user: i64, group: i64, now: i64) -> Result<Message> {
        let tx = self.write_tx()?;
        super::groups::join_in(&tx, user, group, now)?;
        let notice = Notice::Joined {
            userid: user,
            nickname: nickname(&tx, user)?,
        };
        let stored = insert_notice(&tx, group, user, &notice, now)?;
        tx.commit()?;
        Ok(stored)
    }

    /// [`Db::leave_group`], and its notices in the same transaction: "left", then
    /// "owner" when the owner left and the longest-standing member took over. None when
    /// the group was deleted with its last member.
    ///
    /// # Errors
    /// As [`Db::leave_group`].
    pub fn leave_group_noticed(
        &mut self,
        user: i64,
        group: i64,
        now: i64,
    ) -> Result<(LeaveOutcome, Vec<Message>)> {
        let tx = self.write_tx()?;
        let outcome = leave_in(&tx, user, group)?;
        let mut notices = Vec::new();
        if outcome != LeaveOutcome::GroupDeleted {
            let leaver = nickname(&tx, user)?;
            let left = Notice::Left {
                userid: user,
                nickname: leaver.clone(),
            };
            notices.push(insert_notice(&tx, group, user, &left, now)?);
            if let LeaveOutcome::OwnershipTransferred { new_owner } = outcome {
                let owner = Notice::Owner {
                    userid: new_owner,
                    nickname: nickname(&tx, new_owner)?,
                    by: user,
                    bynickname: leaver,
                };
                notices.push(insert_notice(&tx, group, user, &owner, now)?);
            }
        }
        tx.commit()?;
        Ok((outcome, notices))
    }

    /// The owner `actor` changes `group`'s name, icon or memo. A "renamed" notice is
    /// written if the name changed, an "icon" notice if the icon did; the memo changes
    /// quietly. Values equal to the current ones change nothing.
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`], [`StoreError::NotMember`], [`StoreError::NotOwner`],
    /// [`StoreError::GroupNameTaken`] (decided by the UNIQUE index).
    pub fn update_group(
        &mut self,
        actor: i64,
        group: i64,
        update: GroupUpdate,
        now: i64,
    ) -> Result<GroupChanged> {
        let tx = self.write_tx()?;
        let before = owned_group(&tx, actor, group)?;
        let name = update.name.unwrap_or_else(|| before.name.clone());
        let icon = update.icon.unwrap_or_else(|| before.icon.clone());
        let memo = update.memo.unwrap_or_else(|| before.memo.clone());
        tx.prepare_cached("UPDATE chat_groups SET name = ?2, icon = ?3, memo = ?4 WHERE id = ?1")?
            .execute(params![group, name, icon, memo])
            .map_err(taken_or(StoreError::GroupNameTaken))?;
        let by = nickname(&tx, actor)?;
        let mut notices = Vec::new();
        if name != before.name {
            let n = Notice::Renamed {
                name: name.clone(),
                old: before.name.clone(),
                by: actor,
                bynickname: by.clone(),
            };
            notices.push(insert_notice(&tx, group, actor, &n, now)?);
        }
        if icon != before.icon {
            let n = Notice::Icon {
                icon: icon.clone(),
                by: actor,
                bynickname: by,
            };
            notices.push(insert_notice(&tx, group, actor, &n, now)?);
        }
        tx.commit()?;
        Ok(GroupChanged {
            group: Group {
                name,
                icon,
                memo,
                ..before
            },
            notices,
        })
    }

    /// The owner `actor` removes `member` from `group`. The "removed" notice is written
    /// before the membership goes (the removed member is told live; sync and history no
    /// longer show them the group).
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`], [`StoreError::NotMember`] (the actor),
    /// [`StoreError::NotOwner`], [`StoreError::NoSuchMember`] if `member` is not a member,
    /// [`StoreError::OwnerItself`] if `member` is the owner.
    pub fn remove_member(
        &mut self,
        actor: i64,
        group: i64,
        member: i64,
        now: i64,
    ) -> Result<Message> {
        let tx = self.write_tx()?;
        owned_group(&tx, actor, group)?;
        if member == actor {
            return Err(StoreError::OwnerItself);
        }
        if role(&tx, group, member)?.is_none() {
            return Err(StoreError::NoSuchMember);
        }
        let n = Notice::Removed {
            userid: member,
            nickname: nickname(&tx, member)?,
            by: actor,
            bynickname: nickname(&tx, actor)?,
        };
        let stored = insert_notice(&tx, group, actor, &n, now)?;
        tx.prepare_cached("DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
            .execute([group, member])?;
        tx.commit()?;
        Ok(stored)
    }

    /// The owner `actor` makes `member` the owner of `group`; `actor` stays a member.
    /// The creation limit of owned groups is not checked (as when an owner leaves).
    ///
    /// # Errors
    /// As [`Db::remove_member`].
    pub fn transfer_group(
        &mut self,
        actor: i64,
        group: i64,
        member: i64,
        now: i64,
    ) -> Result<GroupChanged> {
        let tx = self.write_tx()?;
        let before = owned_group(&tx, actor, group)?;
        if member == actor {
            return Err(StoreError::OwnerItself);
        }
        if role(&tx, group, member)?.is_none() {
            return Err(StoreError::NoSuchMember);
        }
        tx.prepare_cached(
            "UPDATE group_members SET role = CASE user_id WHEN ?2 THEN 'owner' ELSE 'member' END
             WHERE group_id = ?1 AND user_id IN (?2, ?3)",
        )?
        .execute([group, member, actor])?;
        tx.prepare_cached("UPDATE chat_groups SET owner_id = ?2 WHERE id = ?1")?
            .execute([group, member])?;
        let n = Notice::Owner {
            userid: member,
            nickname: nickname(&tx, member)?,
            by: actor,
            bynickname: nickname(&tx, actor)?,
        };
        let stored = insert_notice(&tx, group, actor, &n, now)?;
        tx.commit()?;
        Ok(GroupChanged {
            group: Group {
                owner_id: member,
                ..before
            },
            notices: vec![stored],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Member, NewGroup};
    use super::*;

    fn notices(t: &TestDb, user: i64) -> Vec<serde_json::Value> {
        t.db.messages_for(user, 0, 100)
            .expect("q")
            .into_iter()
            .filter(|m| m.media == NOTICE)
            .map(|m| serde_json::from_str(&m.content).expect("json"))
            .collect()
    }

    fn kinds(t: &TestDb, user: i64) -> Vec<String> {
        notices(t, user)
            .iter()
            .map(|n| n["notice"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn roles(t: &TestDb, g: i64) -> Vec<(i64, Role)> {
        t.db.members(g)
            .expect("q")
            .into_iter()
            .map(|Member { user, role, .. }| (user.id, role))
            .collect()
    }

    #[test]
    fn owner_changes_and_notices_are_stored_together() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0).id;
        let b = user(&mut t.db, "13800000002", 0).id;
        let c = user(&mut t.db, "13800000003", 0).id;
        let g =
            t.db.create_group(
                a,
                NewGroup {
                    name: "g".into(),
                    ..NewGroup::default()
                },
                5,
                0,
            )
            .expect("g")
            .id;
        let joined = t.db.join_group_noticed(b, g, 1).expect("join");
        assert_eq!((joined.media, joined.sender_id), (NOTICE, b));
        t.db.join_group_noticed(c, g, 2).expect("join");
        assert_eq!(kinds(&t, b), ["joined", "joined"], "b sees its own join");

        // Only the owner manages.
        let rename = GroupUpdate {
            name: Some("h".into()),
            ..GroupUpdate::default()
        };
        assert!(matches!(
            t.db.update_group(b, g, rename.clone(), 3),
            Err(StoreError::NotOwner)
        ));
        assert!(matches!(
            t.db.update_group(99, g, rename.clone(), 3),
            Err(StoreError::NotMember)
        ));
        assert!(matches!(
            t.db.update_group(a, g + 1, rename.clone(), 3),
            Err(StoreError::NoSuchGroup)
        ));
        assert!(matches!(
            t.db.remove_member(b, g, c, 3),
            Err(StoreError::NotOwner)
        ));
        assert!(matches!(
            t.db.transfer_group(c, g, b, 3),
            Err(StoreError::NotOwner)
        ));
        assert_eq!(kinds(&t, a), ["joined", "joined"], "refusals wrote nothing");
        assert_eq!(
            assert_indexed(&t.db),
            (0, 2),
            "notices are in the conversation index"
        );

        let changed =
            t.db.update_group(
                a,
                g,
                GroupUpdate {
                    name: Some("h".into()),
                    icon: Some("/resource/i.png".into()),
                    memo: Some("m".into()),
                },
                4,
            )
            .expect("update");
        assert_eq!(
            (changed.group.name.as_str(), changed.group.icon.as_str()),
            ("h", "/resource/i.png")
        );
        assert_eq!(t.db.group_by_id(g).expect("q"), Some(changed.group.clone()));
        assert_eq!(changed.notices.len(), 2);
        // c sees its own joining (not b's, before it), then the changes.
        let n = notices(&t, c);
        assert_eq!(kinds(&t, c), ["joined", "renamed", "icon"]);
        assert_eq!(n[0]["userid"], serde_json::json!(c));
        assert_eq!(
            (n[1]["name"].as_str(), n[1]["old"].as_str()),
            (Some("h"), Some("g"))
        );
        // Same values again: no notice.
        let same =
            t.db.update_group(
                a,
                g,
                GroupUpdate {
                    name: Some("h".into()),
                    ..GroupUpdate::default()
                },
                5,
            )
            .expect("same");
        assert!(same.notices.is_empty());
        // A taken name is refused and changes nothing.
        t.db.create_group(
            b,
            NewGroup {
                name: "taken".into(),
                ..NewGroup::default()
            },
            5,
            5,
        )
        .expect("other");
        assert!(matches!(
            t.db.update_group(
                a,
                g,
                GroupUpdate {
                    name: Some("taken".into()),
                    ..GroupUpdate::default()
                },
                6
            ),
            Err(StoreError::GroupNameTaken)
        ));
        assert_eq!(t.db.group_by_id(g).expect("q").expect("g").name, "h");

        // Remove: not oneself, only members.
        assert!(matches!(
            t.db.remove_member(a, g, a, 7),
            Err(StoreError::OwnerItself)
        ));
        assert!(matches!(
            t.db.remove_member(a, g, 99, 7),
            Err(StoreError::NoSuchMember)
        ));
        let removed = t.db.remove_member(a, g, c, 7).expect("remove");
        assert!(!t.db.is_member(g, c).expect("q"));
        assert!(
            t.db.messages_for(c, 0, 100).expect("q").is_empty(),
            "a removed member no longer syncs the group"
        );
        assert_eq!(kinds(&t, b).last().map(String::as_str), Some("removed"));
        assert_eq!(
            notices(&t, b).last().expect("n")["userid"],
            serde_json::json!(c)
        );
        assert_eq!(
            notice_sentence(&removed.content).as_deref(),
            Some("nick-13800000003 was removed by nick-13800000001")
        );

        // Transfer: the old owner stays a member and can no longer manage.
        let moved = t.db.transfer_group(a, g, b, 8).expect("transfer");
        assert_eq!(moved.group.owner_id, b);
        assert_eq!(roles(&t, g), [(a, Role::Member), (b, Role::Owner)]);
        assert!(matches!(
            t.db.remove_member(a, g, b, 9),
            Err(StoreError::NotOwner)
        ));
        assert_eq!(kinds(&t, a).last().map(String::as_str), Some("owner"));

        // The owner leaving: "left" then "owner" for the longest-standing member.
        let (outcome, n) = t.db.leave_group_noticed(b, g, 10).expect("leave");
        assert_eq!(outcome, LeaveOutcome::OwnershipTransferred { new_owner: a });
        assert_eq!(n.len(), 2);
        assert_eq!(kinds(&t, a)[kinds(&t, a).len() - 2..], ["left", "owner"]);
        // The last member leaving deletes the group and writes nothing.
        let (outcome, n) = t.db.leave_group_noticed(a, g, 11).expect("leave");
        assert_eq!((outcome, n.len()), (LeaveOutcome::GroupDeleted, 0));
        assert!(t.db.messages_for(b, 0, 100).expect("q").is_empty());
    }

    #[test]
    fn sentences_read_back_from_content() {
        for n in [
            Notice::Joined {
                userid: 1,
                nickname: "Ann".into(),
            },
            Notice::Renamed {
                name: "new".into(),
                old: "old".into(),
                by: 1,
                bynickname: "Ann".into(),
            },
            Notice::Owner {
                userid: 2,
                nickname: "Bob".into(),
                by: 1,
                bynickname: "Ann".into(),
            },
        ] {
            let json = serde_json::to_string(&n).expect("json");
            assert_eq!(notice_sentence(&json), Some(n.sentence()), "{json}");
        }
        assert_eq!(notice_sentence("hello"), None);
        assert_eq!(notice_sentence(r#"{"notice":"other"}"#), None);
    }
}

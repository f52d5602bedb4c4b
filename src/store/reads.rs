//! Read markers and the conversation list.
//!
//! A read marker is the newest message of one conversation a user has read
//! (`read_markers`). It only moves forward, and it always names a message of that
//! conversation the user may see: [`Db::mark_read`] takes the newest such message at
//! or before the id the client gave, so an id beyond the conversation's latest is
//! clamped to the latest, and an id of another conversation to this conversation's
//! message before it; an id before anything the user can see changes nothing.
//!
//! [`Db::conversations`] lists a user's friends and groups with each conversation's
//! last message, its unread count (messages of others after the marker, at most
//! [`UNREAD_CAP`]) and, one-to-one, how far the other side has read. Every read is an
//! index probe or a bounded index range per conversation (`hot_queries_use_indexes`
//! in `messages.rs` checks the plans).

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::messages::sent_ids;
use super::{Db, Peer, Result};
use crate::im::cmd::code::{GROUP, SINGLE};

/// Unread counts stop here: a client shows 100 as "99+".
pub const UNREAD_CAP: i64 = 100;

/// A group's unread count looks at most at this many messages after the marker (the
/// user's own among them are not counted).
pub const UNREAD_SCAN: i64 = 500;

/// Longest preview of a text message, in characters (an ellipsis follows a cut).
pub const PREVIEW_CHARS: usize = 100;

/// A user has read a conversation up to a message id (as the client said it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadMark {
    /// The reader.
    pub user: i64,
    /// The conversation.
    pub peer: Peer,
    /// The newest message read.
    pub id: i64,
}

/// One conversation of [`Db::conversations`], as `/contact/conversations` sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conversation {
    /// 10 one-to-one, 11 group.
    pub cmd: i64,
    /// The friend's or the group's id.
    pub dstid: i64,
    /// The friend's nickname or the group's name.
    pub name: String,
    /// The friend's avatar or the group's icon.
    pub avatar: String,
    /// The last message's id; 0 if the conversation has none.
    pub lastid: i64,
    /// Its sender (0 without a message).
    pub userid: i64,
    /// Its `media` (0 without a message).
    pub media: i64,
    /// Its text, cut to [`PREVIEW_CHARS`], or "[picture]", "[voice]" by media.
    pub preview: String,
    /// Last activity, unix ms: the last message's time, or else when the friendship
    /// or the membership began.
    pub createat: i64,
    /// Messages of others after the user's marker, at most [`UNREAD_CAP`].
    pub unread: i64,
    /// The user's read marker (0: nothing read).
    pub read: i64,
    /// One-to-one: the friend's read marker in this conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<i64>,
}

/// The preview of a message: text cut to [`PREVIEW_CHARS`], a tag for media.
pub fn preview(media: i64, content: &str) -> String {
    match media {
        RECALLED => "[recalled]".to_owned(),
        3 => "[voice]".to_owned(),
        4 => "[picture]".to_owned(),
        super::NOTICE => super::notice_sentence(content).unwrap_or_else(|| "[notice]".to_owned()),
        _ if content.trim().is_empty() => "[attachment]".to_owned(),
        _ => {
            let text = content.trim();
            match text.char_indices().nth(PREVIEW_CHARS) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text.to_owned(),
            }
        }
    }
}

/// The newest message at or before `?3` between users `?1` and `?2` (both directions,
/// both parts of the conversation index, merged newest first; [`sent_ids`]); NULL if none.
fn clamp_pair_sql() -> String {
    let there = sent_ids("?1", SINGLE, "?2", "id <= ?3");
    let back = sent_ids("?2", SINGLE, "?1", "id <= ?3");
    format!("SELECT ({there} UNION ALL {back} ORDER BY 1 DESC LIMIT 1)")
}

/// The newest message of group `?1` at or before `?3` and after the join point `?2`.
const CLAMP_GROUP: &str =
    "SELECT max(id) FROM messages WHERE cmd = 11 AND dst_id = ?1 AND id <= ?3 AND id > ?2";

/// The friends of `?1` with the last message each way (the newest id in both parts of
/// the conversation index; NULL if none) and both markers.
pub(super) fn friend_conversations_sql() -> String {
    let mine = sent_ids("?1", SINGLE, "u.id", "id > 0");
    let theirs = sent_ids("u.id", SINGLE, "?1", "id > 0");
    format!(
        "SELECT u.id, u.nickname, u.avatar, f.created_at,
         ({mine} ORDER BY 1 DESC LIMIT 1),
         ({theirs} ORDER BY 1 DESC LIMIT 1),
         (SELECT msg_id FROM read_markers WHERE user_id = ?1 AND cmd = {SINGLE} AND dst_id = u.id),
         (SELECT msg_id FROM read_markers WHERE user_id = u.id AND cmd = {SINGLE} AND dst_id = ?1)
         FROM friends f JOIN users u ON u.id = f.friend_id
         WHERE f.user_id = ?1"
    )
}

/// The groups of `?1` with the last message since joining and the marker.
pub(super) const GROUP_CONVERSATIONS: &str =
    "SELECT g.id, g.name, g.icon, gm.joined_at, gm.join_msg_id,
     (SELECT max(id) FROM messages WHERE cmd = 11 AND dst_id = g.id AND id > gm.join_msg_id),
     (SELECT msg_id FROM read_markers WHERE user_id = ?1 AND cmd = 11 AND dst_id = g.id)
     FROM group_members gm CROSS JOIN chat_groups g ON g.id = gm.group_id
     WHERE gm.user_id = ?1";

/// Unread one-to-one: messages from `?1` to `?2` after `?3` (both parts of the
/// conversation index), at most [`UNREAD_CAP`].
pub(super) fn unread_pair_sql() -> String {
    let ids = sent_ids("?1", SINGLE, "?2", "id > ?3");
    format!("SELECT count(*) FROM ({ids} LIMIT {UNREAD_CAP})")
}

/// Unread in group `?1` after `?2` not from `?3`, among the next [`UNREAD_SCAN`].
pub(super) const UNREAD_GROUP: &str = "SELECT count(*) FROM (SELECT sender_id AS s FROM messages
     WHERE cmd = 11 AND dst_id = ?1 AND id > ?2 ORDER BY id LIMIT 500) WHERE s <> ?3";

/// The last message's fields for the list; a recalled message's media reads as
/// [`RECALLED`].
const LAST_MESSAGE: &str = "SELECT sender_id, CASE WHEN recalled_at IS NULL THEN media ELSE 0 END,
     content, created_at FROM messages WHERE id = ?1";

/// The media [`preview`] is given for a recalled message (stored media is 1 to 99).
pub const RECALLED: i64 = 0;

impl Db {
    /// Stores read markers, all in one transaction; for each mark, the marker it set,
    /// or `None` if the marker did not move (already there or further, or nothing of
    /// the conversation at or before the id that the user may see). A group mark of
    /// a user who is not a member, or a one-to-one mark between users who are not
    /// friends, sets nothing (the loop has refused those already).
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only; nothing is stored then.
    pub fn mark_read(&mut self, marks: &[ReadMark]) -> Result<Vec<Option<i64>>> {
        let tx = self.write_tx()?;
        let moved = marks
            .iter()
            .map(|m| mark_one(&tx, *m))
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(moved)
    }

    /// The read marker of `user` in the conversation with `peer` (0: none).
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn read_marker(&self, user: i64, peer: Peer) -> Result<i64> {
        let (cmd, dst) = peer.cmd_and_dst();
        Ok(self
            .conn
            .prepare_cached(
                "SELECT msg_id FROM read_markers WHERE user_id = ?1 AND cmd = ?2 AND dst_id = ?3",
            )?
            .query_row([user, cmd, dst], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// The read markers of a group's members, as `(user, marker)` (members without
    /// one are left out).
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn group_markers(&self, group: i64) -> Result<Vec<(i64, i64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT gm.user_id, r.msg_id FROM group_members gm
             JOIN read_markers r ON r.user_id = gm.user_id AND r.cmd = 11 AND r.dst_id = gm.group_id
             WHERE gm.group_id = ?1",
        )?;
        let rows = stmt.query_map([group], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every friend and group of `user` as a conversation, newest activity first
    /// (ties: the larger last message id, then one-to-one first, then the smaller id).
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn conversations(&self, user: i64) -> Result<Vec<Conversation>> {
        let mut out = self.conversation_rows(user)?;
        let mut last = self.conn.prepare_cached(LAST_MESSAGE)?;
        for c in out.iter_mut().filter(|c| c.lastid > 0) {
            let (sender, media, content, at): (i64, i64, String, i64) = last
                .query_row([c.lastid], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
            c.userid = sender;
            c.media = media;
            c.preview = preview(media, &content);
            c.createat = at;
        }
        out.sort_by(|a, b| {
            (b.createat, b.lastid, a.cmd, a.dstid).cmp(&(a.createat, a.lastid, b.cmd, b.dstid))
        });
        Ok(out)
    }

    /// The unread count of each conversation of `user`, as in [`Db::conversations`]
    /// (without reading the last messages), for `/contact/loadfriend` and
    /// `/contact/loadcommunity`.
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn unread_counts(&self, user: i64) -> Result<HashMap<Peer, i64>> {
        Ok(self
            .conversation_rows(user)?
            .into_iter()
            .map(|c| (Peer::from_cmd(c.cmd, c.dstid), c.unread))
            .collect())
    }

    /// The conversations without their last message's fields, unsorted.
    fn conversation_rows(&self, user: i64) -> Result<Vec<Conversation>> {
        let mut out = Vec::new();
        let mut unread_pair = self.conn.prepare_cached(&unread_pair_sql())?;
        let mut unread_group = self.conn.prepare_cached(UNREAD_GROUP)?;
        {
            let mut stmt = self.conn.prepare_cached(&friend_conversations_sql())?;
            let mut rows = stmt.query([user])?;
            while let Some(r) = rows.next()? {
                let friend: i64 = r.get(0)?;
                let mine: i64 = r.get::<_, Option<i64>>(6)?.unwrap_or(0);
                let lastid = r
                    .get::<_, Option<i64>>(4)?
                    .max(r.get::<_, Option<i64>>(5)?)
                    .unwrap_or(0);
                let unread: i64 =
                    unread_pair.query_row(params![friend, user, mine], |r| r.get(0))?;
                out.push(Conversation {
                    cmd: SINGLE,
                    dstid: friend,
                    name: r.get(1)?,
                    avatar: r.get(2)?,
                    lastid,
                    userid: 0,
                    media: 0,
                    preview: String::new(),
                    createat: r.get(3)?,
                    unread,
                    read: mine,
                    seen: Some(r.get::<_, Option<i64>>(7)?.unwrap_or(0)),
                });
            }
        }
        {
            let mut stmt = self.conn.prepare_cached(GROUP_CONVERSATIONS)?;
            let mut rows = stmt.query([user])?;
            while let Some(r) = rows.next()? {
                let group: i64 = r.get(0)?;
                let join_point: i64 = r.get(4)?;
                let mine: i64 = r.get::<_, Option<i64>>(6)?.unwrap_or(0);
                let others: i64 = unread_group
                    .query_row(params![group, mine.max(join_point), user], |r| r.get(0))?;
                out.push(Conversation {
                    cmd: GROUP,
                    dstid: group,
                    name: r.get(1)?,
                    avatar: r.get(2)?,
                    lastid: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                    userid: 0,
                    media: 0,
                    preview: String::new(),
                    createat: r.get(3)?,
                    unread: others.min(UNREAD_CAP),
                    read: mine,
                    seen: None,
                });
            }
        }
        Ok(out)
    }
}

/// Moves one marker forward, if the user may see the conversation; the new marker.
fn mark_one(tx: &Transaction<'_>, m: ReadMark) -> Result<Option<i64>> {
    let clamped: Option<i64> = match m.peer {
        Peer::User(peer) => {
            let allowed = peer == m.user
                || tx
                    .prepare_cached("SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2")?
                    .exists([m.user, peer])?;
            if !allowed {
                return Ok(None);
            }
            tx.prepare_cached(&clamp_pair_sql())?
                .query_row([m.user, peer, m.id], |r| r.get(0))?
        }
        Peer::Group(group) => {
            let join_point: Option<i64> = tx
                .prepare_cached(
                    "SELECT join_msg_id FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                )?
                .query_row([group, m.user], |r| r.get(0))
                .optional()?;
            let Some(join_point) = join_point else {
                return Ok(None);
            };
            tx.prepare_cached(CLAMP_GROUP)?
                .query_row([group, join_point, m.id], |r| r.get(0))?
        }
    };
    let Some(id) = clamped else {
        return Ok(None);
    };
    let (cmd, dst) = m.peer.cmd_and_dst();
    let changed = tx
        .prepare_cached(
            "INSERT INTO read_markers (user_id, cmd, dst_id, msg_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id, cmd, dst_id) DO UPDATE SET msg_id = excluded.msg_id
             WHERE excluded.msg_id > read_markers.msg_id",
        )?
        .execute([m.user, cmd, dst, id])?;
    Ok((changed > 0).then_some(id))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Message, NewGroup};
    use super::*;

    fn mark(db: &mut Db, user: i64, peer: Peer, id: i64) -> Option<i64> {
        db.mark_read(&[ReadMark { user, peer, id }]).expect("mark")[0]
    }

    #[test]
    fn markers_move_forward_and_are_clamped_to_the_conversation() {
        let mut t = test_db();
        let a = user(&mut t.db, "100001", 1).id;
        let b = user(&mut t.db, "100002", 1).id;
        let c = user(&mut t.db, "100003", 1).id;
        t.db.add_friend(a, b, 1).expect("friends");
        t.db.add_friend(a, c, 1).expect("friends");
        let ids: Vec<i64> =
            t.db.save_messages(
                &[
                    text(b, Peer::User(a), "1"),
                    text(a, Peer::User(b), "2"),
                    text(c, Peer::User(a), "3"),
                    text(b, Peer::User(a), "4"),
                ],
                10,
            )
            .expect("save")
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(mark(&mut t.db, a, Peer::User(b), ids[1]), Some(ids[1]));
        assert_eq!(
            mark(&mut t.db, a, Peer::User(b), ids[0]),
            None,
            "not backwards"
        );
        assert_eq!(
            mark(&mut t.db, a, Peer::User(b), ids[2]),
            None,
            "another conversation's id is clamped to this one's before it"
        );
        assert_eq!(
            mark(&mut t.db, a, Peer::User(b), i64::MAX),
            Some(ids[3]),
            "beyond the latest: the latest"
        );
        assert_eq!(t.db.read_marker(a, Peer::User(b)).expect("read"), ids[3]);
        assert_eq!(
            mark(&mut t.db, b, Peer::User(c), i64::MAX),
            None,
            "no friends"
        );
        assert_eq!(mark(&mut t.db, c, Peer::User(a), ids[0]), None, "before");
        assert_eq!(t.db.read_marker(c, Peer::User(a)).expect("read"), 0);
        assert_eq!(
            mark(&mut t.db, c, Peer::User(a), ids[2]),
            Some(ids[2]),
            "one direction only"
        );
    }

    #[test]
    fn group_markers_need_membership_and_start_after_joining() {
        let mut t = test_db();
        let a = user(&mut t.db, "100001", 1).id;
        let b = user(&mut t.db, "100002", 1).id;
        let g =
            t.db.create_group(
                a,
                NewGroup {
                    name: "g".into(),
                    ..NewGroup::default()
                },
                5,
                1,
            )
            .expect("group")
            .id;
        let before =
            t.db.save_messages(&[text(a, Peer::Group(g), "x")], 2)
                .expect("save")[0]
                .id;
        assert_eq!(
            mark(&mut t.db, b, Peer::Group(g), before),
            None,
            "no member"
        );
        t.db.join_group(b, g, 3).expect("join");
        assert_eq!(
            mark(&mut t.db, b, Peer::Group(g), before),
            None,
            "before joining"
        );
        let after =
            t.db.save_messages(&[text(a, Peer::Group(g), "y")], 4)
                .expect("save")[0]
                .id;
        assert_eq!(mark(&mut t.db, b, Peer::Group(g), after + 5), Some(after));
        assert_eq!(t.db.group_markers(g).expect("markers"), [(b, after)]);
        assert_eq!(
            mark(&mut t.db, a, Peer::Group(g), after),
            Some(after),
            "own messages"
        );
        t.db.leave_group(b, g).expect("leave");
        t.db.leave_group(a, g).expect("the last one leaves");
        let left: i64 =
            t.db.conn
                .query_row("SELECT count(*) FROM read_markers", [], |r| r.get(0))
                .expect("count");
        assert_eq!(left, 0, "a deleted group's markers go with it");
    }

    #[test]
    fn conversations_are_sorted_by_activity_with_previews_and_unread_counts() {
        let mut t = test_db();
        let a = user(&mut t.db, "100001", 1).id;
        let b = user(&mut t.db, "100002", 1).id;
        let c = user(&mut t.db, "100003", 1).id;
        let d = user(&mut t.db, "100004", 1).id;
        t.db.add_friend(a, b, 2).expect("friends");
        t.db.add_friend(a, c, 3).expect("friends");
        t.db.add_friend(a, d, 4).expect("friends");
        let g =
            t.db.create_group(
                c,
                NewGroup {
                    name: "g".into(),
                    ..NewGroup::default()
                },
                5,
                5,
            )
            .expect("group")
            .id;
        t.db.join_group(a, g, 6).expect("join");
        let mut picture = text(b, Peer::User(a), "");
        (picture.media, picture.url) = (4, "/resource/x.png".into());
        let saved =
            t.db.save_messages(
                &[
                    text(b, Peer::User(a), "one"),
                    text(b, Peer::User(a), "two"),
                    text(c, Peer::Group(g), "in the group"),
                    text(a, Peer::Group(g), "mine"),
                    picture,
                ],
                10,
            )
            .expect("save");
        t.db.save_messages(&[text(a, Peer::User(c), "to c")], 20)
            .expect("later");
        let list = t.db.conversations(a).expect("list");
        let order: Vec<(i64, i64)> = list.iter().map(|c| (c.cmd, c.dstid)).collect();
        assert_eq!(
            order,
            [(10, c), (10, b), (11, g), (10, d)],
            "newest first; no message: since the friendship"
        );
        assert_eq!(
            (list[1].preview.as_str(), list[1].unread, list[1].lastid),
            ("[picture]", 3, saved[4].id)
        );
        assert_eq!((list[0].preview.as_str(), list[0].unread), ("to c", 0));
        assert_eq!(
            (list[2].preview.as_str(), list[2].unread),
            ("mine", 1),
            "own messages are not unread"
        );
        assert_eq!(
            (list[3].lastid, list[3].createat, list[3].unread),
            (0, 4, 0)
        );
        mark(&mut t.db, a, Peer::User(b), saved[1].id);
        mark(&mut t.db, b, Peer::User(a), i64::MAX);
        let list = t.db.conversations(a).expect("list");
        assert_eq!(
            (list[1].unread, list[1].read, list[1].seen),
            (1, saved[1].id, Some(saved[4].id))
        );
        // The count stops at the cap.
        let many: Vec<Message> = (0..UNREAD_CAP + 5)
            .map(|i| text(d, Peer::User(a), &i.to_string()))
            .collect();
        t.db.save_messages(&many, 30).expect("many");
        let list = t.db.conversations(a).expect("list");
        assert_eq!((list[0].dstid, list[0].unread), (d, UNREAD_CAP));
    }

    #[test]
    fn conversation_queries_use_indexes() {
        let t = test_db();
        for (name, sql, n) in [
            ("friends", friend_conversations_sql(), 1),
            ("groups", GROUP_CONVERSATIONS.to_owned(), 1),
            ("unread pair", unread_pair_sql(), 3),
            ("unread group", UNREAD_GROUP.to_owned(), 3),
            ("clamp pair", clamp_pair_sql(), 3),
            ("clamp group", CLAMP_GROUP.to_owned(), 3),
            ("last", LAST_MESSAGE.to_owned(), 1),
        ] {
            let mut stmt =
                t.db.conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .expect("prepare");
            let args: Vec<i64> = (1..=n).collect();
            let lines: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .expect("explain")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            let text = lines.join("\n");
            assert!(
                !lines.iter().any(|l| l.starts_with("SCAN ")
                    && !l.starts_with("SCAN (subquery")
                    && l != "SCAN CONSTANT ROW"),
                "{name} scans a table:\n{text}"
            );
            for l in lines.iter().filter(|l| l.contains("messages")) {
                assert!(
                    l.contains("INDEX messages_by_group") || l.contains("INTEGER PRIMARY KEY"),
                    "{name} reads messages without an index: {l}\n{text}"
                );
            }
            // Newest ids come from merging the parts' ranges, never from sorting them.
            assert!(!text.contains("TEMP B-TREE"), "{name} sorts:\n{text}");
            // The conversation index is read by its key: sender, kind and recipient.
            for l in lines.iter().filter(|l| l.contains("sender_dst")) {
                assert!(
                    l.contains("PRIMARY KEY (sender_id=? AND cmd=? AND dst_id=?"),
                    "{name} reads the conversation index too widely: {l}\n{text}"
                );
            }
            for l in lines.iter().filter(|l| l.contains("read_markers")) {
                assert!(l.contains("PRIMARY KEY"), "{name}: {l}\n{text}");
            }
        }
    }

    #[test]
    fn previews_cut_text_and_name_media() {
        assert_eq!(preview(1, " hi "), "hi");
        assert_eq!(preview(4, ""), "[picture]");
        assert_eq!(preview(3, ""), "[voice]");
        assert_eq!(preview(RECALLED, ""), "[recalled]");
        let long = "é".repeat(150);
        let p = preview(1, &long);
        assert_eq!(p.chars().count(), PREVIEW_CHARS + 1);
        assert!(p.ends_with('…'));
    }
}

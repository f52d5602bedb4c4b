//! What a sender may do to a message after sending it: recall it, edit its text, and
//! reply to an earlier one with a quote.
//!
//! A recall keeps the row (its id, so sync cursors, read markers and join points keep
//! their meaning) and clears what was said in the same transaction: `content`, `pic`,
//! `url`, `memo` and `amount`, with `recalled_at` set. Nothing serves what was recalled
//! afterwards: history and sync read the cleared row, a quote of it says "recalled".
//! An uploaded file the message pointed to stays under the resource directory (an
//! upload is stored once per content and may be in other messages).
//!
//! An edit replaces the text of a text message (media 1) and sets `edited_at`.
//!
//! Both are the sender's own, within a window from `created_at` ([`Windows`]), and
//! run on the chat writer in one transaction per batch, like sends.
//!
//! Each change is written to the change log (`message_changes`) in the same
//! transaction, under a new `seq`: one row per message, the latest change of it (an
//! edit then a recall leave the recall), so that a device that was away learns what
//! changed through sync ([`Db::changes_for`]) without reading history again.

use rusqlite::{OptionalExtension, Transaction, params};

use super::messages::{MESSAGE_COLUMN_COUNT, MESSAGE_COLUMNS, QUOTE_JOIN, message_from_row};
use super::{Db, Message, Peer, Result};
use crate::im::cmd::code::{GROUP, SINGLE};

/// How many characters of the quoted message a reply carries.
pub const QUOTE_CHARS: usize = 100;

/// A short preview of the message a reply quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The quoted message's id.
    pub id: i64,
    /// Its sender.
    pub sender_id: i64,
    /// The first [`QUOTE_CHARS`] characters of its text ("" once recalled).
    pub content: String,
    /// Its media.
    pub media: i64,
    /// Whether its sender has recalled it.
    pub recalled: bool,
}

impl Quote {
    /// A quote of `content`, cut to [`QUOTE_CHARS`] characters.
    pub fn new(id: i64, sender_id: i64, content: &str, media: i64, recalled: bool) -> Quote {
        Quote {
            id,
            sender_id,
            content: content.chars().take(QUOTE_CHARS).collect(),
            media,
            recalled,
        }
    }
}

/// How long after sending a message its sender may recall or edit it, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// `--recall-window-secs`.
    pub recall_ms: i64,
    /// `--edit-window-secs`.
    pub edit_ms: i64,
}

/// What a change does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Recall the message.
    Recall,
    /// Replace its text (already checked for length and emptiness).
    Content(String),
}

/// A change a user asks for to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Who asks (the connection's user).
    pub user: i64,
    /// The message.
    pub id: i64,
    /// What to do.
    pub edit: Edit,
    /// The client's reference, for the ack.
    pub client_ref: Option<String>,
}

/// A change the writer applied: the message as it is now, and its `seq` in the
/// change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// The message after the change (with its quote).
    pub message: Message,
    /// Where the change is in the log.
    pub seq: i64,
}

/// Why a change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeRefused {
    /// No message has this id.
    NoSuchMessage,
    /// Somebody else sent it.
    NotYours,
    /// Its window has passed.
    TooLate,
    /// It was recalled already.
    Recalled,
    /// An edit of a message that is not text.
    NotText,
    /// The user was blocked by an administrator (or deleted) while connected.
    Blocked,
}

impl Db {
    /// Applies `changes` in one transaction at server time `now`, in order: each is
    /// the message as it is after the change (with its quote) and its `seq` in the
    /// change log, or why it was refused.
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only; nothing of the batch is changed then.
    pub fn change_messages(
        &mut self,
        changes: &[Change],
        now: i64,
        windows: Windows,
    ) -> Result<Vec<std::result::Result<Changed, ChangeRefused>>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.write_tx()?;
        let mut out = Vec::with_capacity(changes.len());
        {
            let mut get = tx.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m {QUOTE_JOIN} WHERE m.id = ?1"
            ))?;
            let mut active =
                tx.prepare_cached("SELECT 1 FROM users WHERE id = ?1 AND NOT blocked")?;
            let mut recall = tx.prepare_cached(
                "UPDATE messages SET content = '', pic = '', url = '', memo = '', amount = 0,
                        recalled_at = ?2
                 WHERE id = ?1",
            )?;
            let mut edit = tx
                .prepare_cached("UPDATE messages SET content = ?2, edited_at = ?3 WHERE id = ?1")?;
            // REPLACE: the message's earlier change (the unique message_id) makes way.
            let mut log = tx.prepare_cached(
                "INSERT OR REPLACE INTO message_changes
                        (message_id, cmd, dst_id, sender_id, changed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for c in changes {
                let Some(mut m) = get.query_row([c.id], message_from_row).optional()? else {
                    out.push(Err(ChangeRefused::NoSuchMessage));
                    continue;
                };
                let window = match c.edit {
                    Edit::Recall => windows.recall_ms,
                    Edit::Content(_) => windows.edit_ms,
                };
                let refused = if m.sender_id != c.user {
                    Some(ChangeRefused::NotYours)
                } else if !active.exists([c.user])? {
                    Some(ChangeRefused::Blocked)
                } else if m.recalled_at != 0 {
                    Some(ChangeRefused::Recalled)
                } else if matches!(c.edit, Edit::Content(_)) && m.media != 1 {
                    Some(ChangeRefused::NotText)
                } else if now.saturating_sub(m.created_at) > window {
                    Some(ChangeRefused::TooLate)
                } else {
                    None
                };
                if let Some(why) = refused {
                    out.push(Err(why));
                    continue;
                }
                match &c.edit {
                    Edit::Recall => {
                        recall.execute(params![c.id, now])?;
                        m = Message {
                            recalled_at: now,
                            content: String::new(),
                            pic: String::new(),
                            url: String::new(),
                            memo: String::new(),
                            amount: 0,
                            ..m
                        };
                    }
                    Edit::Content(text) => {
                        edit.execute(params![c.id, text, now])?;
                        m.content.clone_from(text);
                        m.edited_at = now;
                    }
                }
                log.execute(params![m.id, m.cmd(), m.dst_id(), m.sender_id, now])?;
                let seq = tx.last_insert_rowid();
                out.push(Ok(Changed { message: m, seq }));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// The changes user `user` may see with a `seq` above `after` and at most `upto`,
    /// oldest first, at most `limit`: each with the message as it is now. The
    /// changes of the user's one-to-one messages, both directions, and of the messages
    /// of the user's groups sent after they joined; the same conversations as
    /// [`Db::messages_for`], by the same kind of index ranges (merged by `seq`).
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn changes_for(
        &self,
        user: i64,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<Changed>> {
        let mut stmt = self.conn.prepare_cached(&changes_for_sql())?;
        let rows = stmt.query_map(params![user, after, upto, super::sql_limit(limit)], |r| {
            Ok(Changed {
                message: message_from_row(r)?,
                seq: r.get(MESSAGE_COLUMN_COUNT)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest `seq` the change log has given (0 before the first change), whether
    /// or not its row is still there. A sync reads it before the changes, and reads
    /// only the changes up to it: one committed later has a larger `seq`.
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn latest_change(&self) -> Result<i64> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COALESCE(
                 (SELECT seq FROM sqlite_sequence WHERE name = 'message_changes'), 0)",
        )?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }

    /// The quote of message `id` as a reply shows it; `None` if it is not stored.
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn quote(&self, id: i64) -> Result<Option<Quote>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, sender_id, content, media, recalled_at IS NOT NULL
             FROM messages WHERE id = ?1",
        )?;
        Ok(stmt
            .query_row([id], |r| {
                Ok(Quote::new(
                    r.get(0)?,
                    r.get(1)?,
                    &r.get::<_, String>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })
            .optional()?)
    }
}

/// Changes after `?2` and up to `?3` that user `?1` may see, by `seq`, at most `?4`:
/// one-to-one to the user (`message_changes_by_dst`), from the user to others
/// (`message_changes_by_sender`; one to oneself is in the first range), and for each
/// group of the user its changes of messages after the join point.
fn changes_for_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS}, c.seq FROM message_changes c
         JOIN messages m ON m.id = c.message_id {QUOTE_JOIN}
         WHERE c.cmd = {SINGLE} AND c.dst_id = ?1 AND c.seq > ?2 AND c.seq <= ?3
         UNION ALL
         SELECT {MESSAGE_COLUMNS}, c.seq FROM message_changes c
         JOIN messages m ON m.id = c.message_id {QUOTE_JOIN}
         WHERE c.sender_id = ?1 AND c.cmd = {SINGLE} AND c.seq > ?2 AND c.seq <= ?3
           AND c.dst_id <> ?1
         UNION ALL
         SELECT {MESSAGE_COLUMNS}, c.seq FROM group_members gm
         CROSS JOIN message_changes c ON c.cmd = {GROUP} AND c.dst_id = gm.group_id
                                     AND c.seq > ?2 AND c.seq <= ?3
                                     AND c.message_id > gm.join_msg_id
         JOIN messages m ON m.id = c.message_id {QUOTE_JOIN}
         WHERE gm.user_id = ?1
         ORDER BY {order}
         LIMIT ?4",
        order = MESSAGE_COLUMN_COUNT + 1
    )
}

/// Whether `sender` may quote message `id` in a message to `to`: it is a message of
/// the same conversation that `sender` can see (for a group: sent after they joined).
pub(super) fn reply_visible(
    tx: &Transaction<'_>,
    sender: i64,
    to: Peer,
    id: i64,
) -> rusqlite::Result<bool> {
    match to {
        Peer::User(peer) => {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT 1 FROM messages WHERE id = ?1 AND cmd = {SINGLE}
                 AND ((sender_id = ?2 AND dst_id = ?3) OR (sender_id = ?3 AND dst_id = ?2))"
            ))?;
            stmt.exists(params![id, sender, peer])
        }
        Peer::Group(g) => {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT 1 FROM messages m JOIN group_members gm
                   ON gm.group_id = m.dst_id AND gm.user_id = ?2
                 WHERE m.id = ?1 AND m.cmd = {GROUP} AND m.dst_id = ?3
                   AND m.id > gm.join_msg_id"
            ))?;
            stmt.exists(params![id, sender, g])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{test_db, text, user};
    use super::super::{NewGroup, SendRight};
    use super::*;

    const WINDOWS: Windows = Windows {
        recall_ms: 120_000,
        edit_ms: 900_000,
    };

    fn change(user: i64, id: i64, edit: Edit) -> Change {
        Change {
            user,
            id,
            edit,
            client_ref: None,
        }
    }

    #[test]
    fn a_recall_clears_the_row_and_keeps_its_id() {
        let mut t = test_db();
        let a = user(&mut t.db, "13700000001", 0).id;
        let b = user(&mut t.db, "13700000002", 0).id;
        let pic = Message {
            media: 4,
            url: "/resource/a.png".into(),
            pic: "/resource/a_t.jpg".into(),
            memo: "m".into(),
            amount: 3,
            ..text(a, Peer::User(b), "caption")
        };
        let saved = t.db.save_messages(&[pic], 1_000).expect("save");
        let id = saved[0].id;
        let out =
            t.db.change_messages(&[change(a, id, Edit::Recall)], 2_000, WINDOWS)
                .expect("change");
        let m = &out[0].as_ref().expect("recalled").message;
        assert_eq!((m.id, m.recalled_at, m.created_at), (id, 2_000, 1_000));
        let stored = &t.db.messages_for(b, 0, 10).expect("q")[0];
        assert_eq!(stored, m, "what the writer tells is what is stored");
        assert_eq!(
            (
                stored.content.as_str(),
                stored.url.as_str(),
                stored.pic.as_str(),
                stored.memo.as_str(),
                stored.amount
            ),
            ("", "", "", "", 0)
        );
        assert_eq!(stored.media, 4, "the kind stays");
        // Twice: refused, and so is an edit.
        let out =
            t.db.change_messages(
                &[
                    change(a, id, Edit::Recall),
                    change(a, id, Edit::Content("x".into())),
                ],
                2_001,
                WINDOWS,
            )
            .expect("change");
        assert_eq!(
            out,
            [Err(ChangeRefused::Recalled), Err(ChangeRefused::Recalled)]
        );
    }

    #[test]
    fn only_the_sender_within_the_window_and_only_text_is_edited() {
        let mut t = test_db();
        let a = user(&mut t.db, "13700000001", 0).id;
        let b = user(&mut t.db, "13700000002", 0).id;
        let batch = [
            text(a, Peer::User(b), "one"),
            Message {
                media: 4,
                url: "/resource/x.png".into(),
                ..Message::new(a, Peer::User(b))
            },
        ];
        let saved = t.db.save_messages(&batch, 1_000).expect("save");
        let (txt, pic) = (saved[0].id, saved[1].id);
        let edit = |s: &str| Edit::Content(s.to_owned());
        let out =
            t.db.change_messages(
                &[
                    change(b, txt, edit("b's")),
                    change(a, 9_999, edit("none")),
                    change(a, pic, edit("pic")),
                    change(a, txt, edit("late")),
                ],
                1_000 + 900_001,
                WINDOWS,
            )
            .expect("change");
        assert_eq!(
            out,
            [
                Err(ChangeRefused::NotYours),
                Err(ChangeRefused::NoSuchMessage),
                Err(ChangeRefused::NotText),
                Err(ChangeRefused::TooLate),
            ]
        );
        let out =
            t.db.change_messages(&[change(a, txt, edit("two"))], 1_000 + 900_000, WINDOWS)
                .expect("change");
        assert_eq!(out[0].as_ref().map(|c| c.message.edited_at), Ok(901_000));
        let got = &t.db.history(b, Peer::User(a), None, 10).expect("q")[1];
        assert_eq!((got.content.as_str(), got.edited_at), ("two", 901_000));
        // The recall window is shorter: past it, no recall.
        let out =
            t.db.change_messages(&[change(a, txt, Edit::Recall)], 1_000 + 120_001, WINDOWS)
                .expect("change");
        assert_eq!(out, [Err(ChangeRefused::TooLate)]);
    }

    #[test]
    fn replies_quote_what_the_sender_may_see() {
        let mut t = test_db();
        let a = user(&mut t.db, "13700000001", 0).id;
        let b = user(&mut t.db, "13700000002", 0).id;
        let c = user(&mut t.db, "13700000003", 0).id;
        t.db.add_friend(a, b, 1).expect("friends");
        t.db.add_friend(a, c, 1).expect("friends");
        let g = NewGroup {
            name: "g".into(),
            ..NewGroup::default()
        };
        let g = t.db.create_group(a, g, 5, 1).expect("group").id;
        let saved =
            t.db.save_messages(
                &[
                    text(a, Peer::User(b), &"q".repeat(120)),
                    text(a, Peer::User(c), "to c"),
                    text(a, Peer::Group(g), "before b joined"),
                ],
                2,
            )
            .expect("save");
        let (ab, ac, early) = (saved[0].id, saved[1].id, saved[2].id);
        t.db.join_group(b, g, 3).expect("join");
        let reply = |from: i64, to: Peer, id: i64| Message {
            reply_to: id,
            ..text(from, to, "re")
        };
        let out =
            t.db.save_messages_checked(
                &[
                    reply(b, Peer::User(a), ab),
                    reply(b, Peer::User(a), ac),
                    reply(b, Peer::Group(g), early),
                    reply(a, Peer::Group(g), early),
                    reply(b, Peer::User(a), 99_999),
                ],
                4,
            )
            .expect("save");
        assert!(out[0].is_ok() && out[3].is_ok(), "{out:?}");
        assert_eq!(out[1], Err(SendRight::BadReply), "another conversation");
        assert_eq!(out[2], Err(SendRight::BadReply), "before b joined");
        assert_eq!(out[4], Err(SendRight::BadReply), "no such message");
        let id = out[0].expect("saved").id;
        let got = t.db.history(a, Peer::User(b), None, 1).expect("q");
        assert_eq!(got[0].id, id);
        assert_eq!(got[0].reply_to, ab);
        assert_eq!(
            got[0].quote,
            Some(Quote::new(ab, a, &"q".repeat(100), 1, false))
        );
        assert_eq!(got[0].quote, t.db.quote(ab).expect("quote"));
        // Recalled: the quote says so and keeps nothing of it.
        t.db.change_messages(&[change(a, ab, Edit::Recall)], 5, WINDOWS)
            .expect("recall");
        let got = t.db.messages_for(b, 0, 100).expect("q");
        let r = got.iter().find(|m| m.id == id).expect("the reply");
        assert_eq!(r.quote, Some(Quote::new(ab, a, "", 1, true)));
    }
}

#[cfg(test)]
mod log_tests {
    use super::super::testutil::{test_db, text, user};
    use super::super::{NewGroup, Peer};
    use super::*;

    const WINDOWS: Windows = Windows {
        recall_ms: 120_000,
        edit_ms: 900_000,
    };

    fn apply(db: &mut Db, user: i64, id: i64, edit: Edit, now: i64) -> i64 {
        let change = Change {
            user,
            id,
            edit,
            client_ref: None,
        };
        let out = db.change_messages(&[change], now, WINDOWS).expect("change");
        out[0].as_ref().expect("applied").seq
    }

    /// (message id, recalled, content) of each change `user` sees after `after`.
    fn seen(db: &Db, user: i64, after: i64) -> Vec<(i64, bool, String)> {
        let upto = db.latest_change().expect("latest");
        db.changes_for(user, after, upto, 100)
            .expect("changes")
            .into_iter()
            .map(|c| (c.message.id, c.message.recalled_at != 0, c.message.content))
            .collect()
    }

    #[test]
    fn the_log_tells_each_conversation_its_changes_once_in_seq_order() {
        let mut t = test_db();
        let a = user(&mut t.db, "13700000001", 0).id;
        let b = user(&mut t.db, "13700000002", 0).id;
        let c = user(&mut t.db, "13700000003", 0).id;
        let g = NewGroup {
            name: "g".into(),
            ..NewGroup::default()
        };
        let g = t.db.create_group(a, g, 5, 1).expect("group").id;
        let saved =
            t.db.save_messages(
                &[
                    text(a, Peer::User(b), "a to b"),
                    text(a, Peer::User(c), "a to c"),
                    text(a, Peer::Group(g), "before b joined"),
                    text(b, Peer::User(a), "b to a"),
                ],
                2,
            )
            .expect("save");
        t.db.join_group(b, g, 3).expect("join");
        let late =
            t.db.save_messages(&[text(a, Peer::Group(g), "after")], 4)
                .expect("save")[0]
                .id;
        let [ab, ac, early, ba] = [saved[0].id, saved[1].id, saved[2].id, saved[3].id];
        assert_eq!(t.db.latest_change().expect("latest"), 0);
        let s1 = apply(&mut t.db, a, ab, Edit::Content("edited".into()), 10);
        apply(&mut t.db, a, ac, Edit::Recall, 11);
        apply(&mut t.db, a, early, Edit::Recall, 12);
        apply(
            &mut t.db,
            a,
            late,
            Edit::Content("after, edited".into()),
            13,
        );
        let s5 = apply(&mut t.db, b, ba, Edit::Recall, 14);
        // The edit of ab then its recall: one change, the recall, at the newer seq.
        let s6 = apply(&mut t.db, a, ab, Edit::Recall, 15);
        assert!(s1 < s5 && s5 < s6);
        assert_eq!(t.db.latest_change().expect("latest"), s6);
        assert_eq!(
            seen(&t.db, b, 0),
            [
                (late, false, "after, edited".to_owned()),
                (ba, true, String::new()),
                (ab, true, String::new()),
            ],
            "b: both directions with a, the group only after joining, not a↔c"
        );
        assert_eq!(seen(&t.db, c, 0), [(ac, true, String::new())]);
        assert_eq!(seen(&t.db, a, 0).len(), 5, "the sender sees all its own");
        assert_eq!(seen(&t.db, b, s5), [(ab, true, String::new())]);
        assert!(seen(&t.db, b, s6).is_empty());
        // Bounded by `upto` and `limit`.
        let upto = t.db.changes_for(b, 0, s5, 100).expect("changes");
        assert_eq!(upto.len(), 2);
        let one = t.db.changes_for(a, 0, s6, 1).expect("changes");
        assert_eq!(one.len(), 1);
        assert!(one[0].seq > 0);
        // A member who left sees no more of the group's changes.
        t.db.leave_group(b, g).expect("leave");
        assert_eq!(seen(&t.db, b, 0).len(), 2);
    }

    #[test]
    fn change_rows_go_with_their_messages() {
        let mut t = test_db();
        let a = user(&mut t.db, "13700000001", 0).id;
        let b = user(&mut t.db, "13700000002", 0).id;
        let c = user(&mut t.db, "13700000003", 0).id;
        let saved =
            t.db.save_messages(
                &[
                    text(a, Peer::User(b), "old"),
                    text(a, Peer::User(b), "new"),
                    text(b, Peer::User(c), "b to c"),
                    text(c, Peer::User(b), "c to b"),
                ],
                1_000,
            )
            .expect("save");
        for m in &saved {
            let sender = if m.id == saved[2].id {
                b
            } else if m.id == saved[3].id {
                c
            } else {
                a
            };
            apply(&mut t.db, sender, m.id, Edit::Content("x".into()), 2_000);
        }
        let rows = |db: &Db| -> i64 {
            db.conn
                .query_row("SELECT count(*) FROM message_changes", [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(rows(&t.db), 4);
        // Retention removes the first message (and its change), in its batch.
        t.db.conn
            .execute(
                "UPDATE messages SET created_at = 1 WHERE id = ?1",
                [saved[0].id],
            )
            .expect("age it");
        let batch = t.db.remove_old_messages(500, 1_000).expect("retention");
        assert_eq!(batch.removed, 1);
        assert_eq!(rows(&t.db), 3);
        let latest = t.db.latest_change().expect("latest");
        assert_eq!(latest, 4, "a seq is never given again");
        // Deleting a user removes the changes of every message that goes with them.
        t.db.delete_user(a).expect("delete");
        assert_eq!(rows(&t.db), 2);
        t.db.delete_user(c).expect("delete");
        assert_eq!(rows(&t.db), 0);
        assert!(
            t.db.changes_for(b, 0, latest, 10)
                .expect("changes")
                .is_empty()
        );
    }
}

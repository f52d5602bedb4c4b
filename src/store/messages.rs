//! Messages: group-committed saves, per-user catch-up, and conversation history.
//!
//! fastIM persisted nothing (FASTIM.md §1.9 item 14). Here every message gets a server id
//! (an `INTEGER PRIMARY KEY AUTOINCREMENT`: unique, increasing, never reused) before it is
//! acknowledged, and a client that missed messages asks for those after the last id it has.
//!
//! # Group join point
//!
//! A member receives a group's messages whose id is larger than the newest message id at
//! the moment they joined (`group_members.join_msg_id`), both in [`Db::messages_for`] and in
//! [`Db::history`]. An id, not a time: ids are the order in which messages are delivered and
//! paged, whereas `now` comes from the caller and two threads may pass times out of order.
//! The join runs in a write transaction, and so does every save, so "committed before the
//! join" and "id ≤ join point" are the same thing: nothing is missed and nothing older leaks.
//! Leaving deletes the membership; rejoining sets a new join point, so messages sent while
//! away stay invisible.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::changes::{Quote, reply_visible};
use super::{Db, Result, StoreError, no_such_user, sql_limit};

use crate::im::cmd::code::{GROUP, SINGLE};

/// The other side of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A one-to-one chat with this user (`cmd` 10).
    User(i64),
    /// A group chat (`cmd` 11).
    Group(i64),
}

impl Peer {
    /// fastIM's `cmd` and `dstid` for a message to this peer.
    pub fn cmd_and_dst(self) -> (i64, i64) {
        match self {
            Peer::User(id) => (SINGLE, id),
            Peer::Group(id) => (GROUP, id),
        }
    }

    /// The peer a stored `cmd` and `dst_id` name (the schema allows only 10 and 11).
    pub fn from_cmd(cmd: i64, dst: i64) -> Peer {
        if cmd == GROUP {
            Peer::Group(dst)
        } else {
            Peer::User(dst)
        }
    }
}

/// A chat message: what a client sends, what the store saves and reads back, what
/// recipients get. One type from the socket to the database and back: the wire's
/// JSON is its `Serialize` (`im/wire.rs`), the store's row its columns.
///
/// `id` and `created_at` are 0 until it is stored. The caller that saves it has
/// authenticated the sender and checked that they may write to `to` (friendship,
/// membership), or asks [`Db::save_messages_checked`] to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Server id: unique and increasing (0 before it is stored).
    pub id: i64,
    /// The authenticated sender (fastIM's `userid`, which fastIM took from the client).
    pub sender_id: i64,
    /// The recipient user or group (fastIM's `cmd` + `dstid`).
    pub to: Peer,
    /// fastIM's `media`: 1 text, 3 audio, 4 image.
    pub media: i64,
    /// Text.
    pub content: String,
    /// Unused by fastIM's client; kept.
    pub pic: String,
    /// Image or audio URL.
    pub url: String,
    /// Unused by fastIM's client; kept.
    pub memo: String,
    /// Audio length in seconds.
    pub amount: i64,
    /// The client's own id for the message, to make retries idempotent.
    pub client_ref: Option<String>,
    /// Server time, unix milliseconds (0 before it is stored).
    pub created_at: i64,
    /// The earlier message of the conversation this one replies to (0: none).
    pub reply_to: i64,
    /// What a reader sees of `reply_to`, when it is still stored (read with the message).
    pub quote: Option<Quote>,
    /// When the sender recalled it, unix ms (0: not recalled); its content is gone then.
    pub recalled_at: i64,
    /// When the sender last edited its content, unix ms (0: never).
    pub edited_at: i64,
}

impl Message {
    /// An empty text message from `sender_id` to `to`, not stored: fill in the rest
    /// with struct update syntax.
    pub fn new(sender_id: i64, to: Peer) -> Message {
        Message {
            id: 0,
            sender_id,
            to,
            media: 1,
            content: String::new(),
            pic: String::new(),
            url: String::new(),
            memo: String::new(),
            amount: 0,
            client_ref: None,
            created_at: 0,
            reply_to: 0,
            quote: None,
            recalled_at: 0,
            edited_at: 0,
        }
    }

    /// The message with the id and time it was saved under.
    pub fn stored(mut self, saved: Saved) -> Message {
        self.id = saved.id;
        self.created_at = saved.created_at;
        self
    }

    /// fastIM's `cmd`: 10 one-to-one, 11 group.
    pub fn cmd(&self) -> i64 {
        self.to.cmd_and_dst().0
    }

    /// fastIM's `dstid`: the recipient user or group.
    pub fn dst_id(&self) -> i64 {
        self.to.cmd_and_dst().1
    }
}

/// Whether a sender may write to a recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendRight {
    /// A friend, oneself, or a group the sender is a member of.
    Allowed,
    /// One-to-one to someone who is not a friend.
    NotFriends,
    /// To a group the sender is not a member of.
    NotMember,
    /// To a group that does not exist.
    NoSuchGroup,
    /// The sender was blocked by an administrator (or deleted) while connected.
    Blocked,
    /// The message replies to one that is not in this conversation, or that the
    /// sender cannot see (a group message from before they joined), or to none.
    BadReply,
    /// One-to-one between two users one of whom blocked the other (`/contact/block`).
    UserBlocked,
}

/// The outcome of saving one message of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Saved {
    /// The message's server id.
    pub id: i64,
    /// Its server time, unix milliseconds.
    pub created_at: i64,
    /// `true` if the sender had already used this `client_ref`: nothing was inserted, and
    /// `id` and `created_at` are those of the earlier message.
    pub duplicate: bool,
}

/// The columns [`message_from_row`] reads, for a `messages` table aliased `m` joined
/// with its quoted message `q` ([`QUOTE_JOIN`]).
pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.sender_id, m.cmd, m.dst_id, m.media, m.content, m.pic, \
     m.url, m.memo, m.amount, m.client_ref, m.created_at, \
     m.reply_to, m.recalled_at, m.edited_at, q.id, q.sender_id, q.content, q.media, q.recalled_at";

/// How many columns [`MESSAGE_COLUMNS`] has: a query may read more after them.
pub(super) const MESSAGE_COLUMN_COUNT: usize = 20;

/// The quoted message of `m`, looked up by its primary key (absent when none, or gone).
pub(super) const QUOTE_JOIN: &str = "LEFT JOIN messages q ON q.id = m.reply_to";

/// Reads a [`Message`] from the columns of [`MESSAGE_COLUMNS`].
pub(super) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: row.get(0)?,
        sender_id: row.get(1)?,
        to: Peer::from_cmd(row.get(2)?, row.get(3)?),
        media: row.get(4)?,
        content: row.get(5)?,
        pic: row.get(6)?,
        url: row.get(7)?,
        memo: row.get(8)?,
        amount: row.get(9)?,
        client_ref: row.get(10)?,
        created_at: row.get(11)?,
        reply_to: row.get::<_, Option<i64>>(12)?.unwrap_or(0),
        recalled_at: row.get::<_, Option<i64>>(13)?.unwrap_or(0),
        edited_at: row.get::<_, Option<i64>>(14)?.unwrap_or(0),
        quote: match row.get::<_, Option<i64>>(15)? {
            None => None,
            Some(id) => Some(Quote::new(
                id,
                row.get(16)?,
                &row.get::<_, String>(17)?,
                row.get(18)?,
                row.get::<_, Option<i64>>(19)?.is_some(),
            )),
        },
    })
}

/// The first message a sender stored with a client reference (a retry's original):
/// found in `messages_by_client_ref (client_ref, sender_id)`.
const FIRST_WITH_REF: &str =
    "SELECT id, created_at FROM messages WHERE sender_id = ?1 AND client_ref = ?2";

/// The ids of what `sender` sent `dst` (`cmd` 10 or 11, both SQL expressions) with
/// `cond` (on `id`): a `UNION ALL` of the two parts of the conversation index, one range
/// each (`sender_dst` and `sender_dst_recent`; schema step 13). Followed by `ORDER BY 1`
/// and a `LIMIT`, SQLite merges the two ranges in id order and stops at the limit.
pub(super) fn sent_ids(sender: &str, cmd: i64, dst: &str, cond: &str) -> String {
    format!(
        "SELECT id FROM sender_dst
         WHERE sender_id = {sender} AND cmd = {cmd} AND dst_id = {dst} AND {cond}
         UNION ALL
         SELECT id FROM sender_dst_recent
         WHERE sender_id = {sender} AND cmd = {cmd} AND dst_id = {dst} AND {cond}"
    )
}

/// How many keys gather in `sender_dst_recent` before the writer moves them all into
/// `sender_dst` (schema step 13). The recent part then fits in about 20 pages, which is
/// what a commit rewrites of it however many conversations it touches, and the move
/// visits each busy conversation's place in `sender_dst` once per this many messages
/// (about 1.8 pages each) instead of in every commit. Smaller, the moves cost more;
/// larger, the recent part does.
pub(super) const RECENT_KEYS: i64 = 4096;

/// Adds one key to the recent part of the conversation index.
const INDEX_RECENT: &str =
    "INSERT INTO sender_dst_recent (sender_id, cmd, dst_id, id) VALUES (?1, ?2, ?3, ?4)";

/// How many keys one statement of [`index_recent`] adds.
const KEYS_PER_INSERT: usize = 64;

/// Adds the keys (`sender_id, cmd, dst_id, id`) of new messages to the recent part of
/// the conversation index: every insert into `messages` does, in the same transaction
/// (schema step 13). In key order, [`KEYS_PER_INSERT`] per statement, so that a
/// statement's fixed cost (binding, stepping, resetting) is paid once per 64 keys.
pub(super) fn index_recent(
    tx: &rusqlite::Transaction<'_>,
    keys: &mut [[i64; 4]],
) -> rusqlite::Result<()> {
    keys.sort_unstable();
    let mut chunks = keys.chunks_exact(KEYS_PER_INSERT);
    if chunks.len() > 0 {
        let values = vec!["(?, ?, ?, ?)"; KEYS_PER_INSERT].join(", ");
        let mut many = tx.prepare_cached(&format!(
            "INSERT INTO sender_dst_recent (sender_id, cmd, dst_id, id) VALUES {values}"
        ))?;
        for chunk in chunks.by_ref() {
            many.execute(rusqlite::params_from_iter(chunk.iter().flatten()))?;
        }
    }
    let mut one = tx.prepare_cached(INDEX_RECENT)?;
    for key in chunks.remainder() {
        one.execute(*key)?;
    }
    Ok(())
}

/// Once [`RECENT_KEYS`] keys have gathered in the recent part of the conversation index,
/// moves them all into `sender_dst`, in key order, inside the caller's transaction.
/// (Counting them costs about a microsecond: SQLite counts a B-tree's cells page by page.)
pub(super) fn settle_recent(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let recent: i64 = tx
        .prepare_cached("SELECT count(*) FROM sender_dst_recent")?
        .query_row([], |row| row.get(0))?;
    if recent >= RECENT_KEYS {
        tx.prepare_cached(
            "INSERT INTO sender_dst (sender_id, cmd, dst_id, id)
             SELECT sender_id, cmd, dst_id, id FROM sender_dst_recent",
        )?
        .execute([])?;
        tx.prepare_cached("DELETE FROM sender_dst_recent")?
            .execute([])?;
    }
    Ok(())
}

/// What is wrong with the conversation index of a file at schema step 13 or later, one
/// line per kind of fault, none when every message's key is in exactly one of its two
/// parts and neither part names a message that is not there (`fastim admin check`).
pub(super) fn index_faults(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<String>> {
    const KEY: &str =
        "s.sender_id = m.sender_id AND s.cmd = m.cmd AND s.dst_id = m.dst_id AND s.id = m.id";
    let checks = [
        (
            format!(
                "SELECT count(*) FROM messages m
                 WHERE NOT EXISTS (SELECT 1 FROM sender_dst s WHERE {KEY})
                   AND NOT EXISTS (SELECT 1 FROM sender_dst_recent s WHERE {KEY})"
            ),
            "messages missing from the conversation index",
        ),
        (
            "SELECT count(*) FROM sender_dst s
             JOIN sender_dst_recent r USING (sender_id, cmd, dst_id, id)"
                .to_owned(),
            "messages in both parts of the conversation index",
        ),
        (
            format!(
                "SELECT count(*) FROM sender_dst s
                 WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE {KEY})"
            ),
            "keys in sender_dst of messages that are not there",
        ),
        (
            format!(
                "SELECT count(*) FROM sender_dst_recent s
                 WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE {KEY})"
            ),
            "keys in sender_dst_recent of messages that are not there",
        ),
    ];
    let mut faults = Vec::new();
    for (sql, what) in checks {
        let n: i64 = conn.query_row(&sql, [], |row| row.get(0))?;
        if n > 0 {
            faults.push(format!("{n} {what}"));
        }
    }
    Ok(faults)
}

/// Everything after `?2` that user `?1` receives, oldest first, at most `?3`.
///
/// Three parts merged by id: 1:1 messages to the user, 1:1 messages from the user to
/// others (a message to oneself is in the first part already), and for each group of
/// the user (`group_members_by_user`) its messages after both the cursor and the join
/// point (a `messages_by_group` range). One-to-one messages are found by sender and
/// recipient in the conversation index ([`sent_ids`]): `chat_peers` names who wrote to
/// the user (its key) and whom the user wrote to (`chat_peers_by_peer`), and each of those
/// gives one range of at most `?3` ids after the cursor in each part of the index. Each
/// range reads only rows newer than the cursor: the cost follows what is pending and how
/// many people the user writes with, not the table size. `CROSS JOIN` makes SQLite keep
/// the written join order (memberships and peers outside); left to choose, it walked
/// every group message instead. `hot_queries_use_indexes` checks the plan.
fn messages_for_sql() -> String {
    let to_user = sent_ids("cp.peer_id", SINGLE, "?1", "id > ?2");
    let from_user = sent_ids("?1", SINGLE, "cp.user_id", "id > ?2");
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM chat_peers cp
         CROSS JOIN messages m ON m.id IN ({to_user} ORDER BY 1 LIMIT ?3)
         {QUOTE_JOIN}
         WHERE cp.user_id = ?1
         UNION ALL
         SELECT {MESSAGE_COLUMNS} FROM chat_peers cp
         CROSS JOIN messages m ON m.id IN ({from_user} ORDER BY 1 LIMIT ?3)
         {QUOTE_JOIN}
         WHERE cp.peer_id = ?1 AND cp.user_id <> ?1
         UNION ALL
         SELECT {MESSAGE_COLUMNS} FROM group_members gm
         CROSS JOIN messages m ON m.cmd = {GROUP} AND m.dst_id = gm.group_id
                              AND m.id > max(?2, gm.join_msg_id)
         {QUOTE_JOIN}
         WHERE gm.user_id = ?1
         ORDER BY 1
         LIMIT ?3"
    )
}

/// 1:1 history between `?1` and `?2` before id `?3`, newest first, at most `?4`: the
/// newest `?4` ids of both directions in both parts of the conversation index (four
/// ranges merged; the second direction is empty when `?1 = ?2`), then their rows.
fn history_pair_sql() -> String {
    let there = sent_ids("?1", SINGLE, "?2", "id < ?3");
    let back = sent_ids("?2", SINGLE, "?1", "id < ?3 AND ?1 <> ?2");
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m {QUOTE_JOIN}
         WHERE m.id IN ({there} UNION ALL {back} ORDER BY 1 DESC LIMIT ?4)
         ORDER BY m.id DESC"
    )
}

/// Group `?1` history after the join point `?2` and before id `?3`, newest first, at most
/// `?4`: one `messages_by_group` range.
fn history_group_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m {QUOTE_JOIN}
         WHERE m.cmd = {GROUP} AND m.dst_id = ?1 AND m.id > ?2 AND m.id < ?3
         ORDER BY m.id DESC
         LIMIT ?4"
    )
}

impl Db {
    /// Saves a batch of messages in one transaction (one fsync for the whole batch), all
    /// with server time `now`. Returns one [`Saved`] per message, in batch order.
    ///
    /// A message whose `client_ref` its sender already used, earlier or within this batch,
    /// is not inserted: its [`Saved`] carries the first message's id with
    /// `duplicate: true`, so a retried send is acknowledged again but delivered once.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`] if a sender does not exist; [`StoreError::Sqlite`] on I/O
    /// failure. Any error rolls back the whole batch: nothing of it is saved.
    pub fn save_messages(&mut self, batch: &[Message], now: i64) -> Result<Vec<Saved>> {
        let everyone = vec![SendRight::Allowed; batch.len()];
        let saved = self.save_allowed(batch, &everyone, now)?;
        Ok(saved.into_iter().flatten().collect())
    }

    /// Like [`Db::save_messages`], but first checks in the same write transaction that
    /// each sender may write to its recipient: one-to-one only to a friend (or to
    /// oneself), group only as a member. Refused messages are not stored; the others are.
    /// Checking inside the transaction costs no extra locking per message, and nothing
    /// can change a friendship or membership between the check and the insert.
    ///
    /// # Errors
    /// As [`Db::save_messages`].
    pub fn save_messages_checked(
        &mut self,
        batch: &[Message],
        now: i64,
    ) -> Result<Vec<std::result::Result<Saved, SendRight>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.write_tx()?;
        let mut rights = Vec::with_capacity(batch.len());
        {
            let mut known: std::collections::HashMap<(i64, Peer), SendRight> =
                std::collections::HashMap::new();
            let mut friends =
                tx.prepare_cached("SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2")?;
            let mut group = tx.prepare_cached("SELECT 1 FROM chat_groups WHERE id = ?1")?;
            let mut member = tx.prepare_cached(
                "SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2",
            )?;
            // A blocked or deleted sender may still hold a /chat socket opened before: the
            // server checks sessions only at the upgrade, so refuse what it sends.
            let mut active =
                tx.prepare_cached("SELECT 1 FROM users WHERE id = ?1 AND NOT blocked")?;
            for m in batch {
                let key = (m.sender_id, m.to);
                let right = match known.get(&key) {
                    Some(right) => *right,
                    None => {
                        let right = match m.to {
                            _ if !active.exists([m.sender_id])? => SendRight::Blocked,
                            Peer::User(peer) if peer == m.sender_id => SendRight::Allowed,
                            Peer::User(peer) if friends.exists(params![m.sender_id, peer])? => {
                                SendRight::Allowed
                            }
                            Peer::User(_) => SendRight::NotFriends,
                            Peer::Group(g) if !group.exists([g])? => SendRight::NoSuchGroup,
                            Peer::Group(g) if member.exists(params![g, m.sender_id])? => {
                                SendRight::Allowed
                            }
                            Peer::Group(_) => SendRight::NotMember,
                        };
                        known.insert(key, right);
                        right
                    }
                };
                let right = if right == SendRight::Allowed
                    && m.reply_to != 0
                    && !reply_visible(&tx, m.sender_id, m.to, m.reply_to)?
                {
                    SendRight::BadReply
                } else {
                    right
                };
                rights.push(right);
            }
        }
        let saved = Self::insert_batch(&tx, batch, &rights, now)?;
        tx.commit()?;
        Ok(saved
            .into_iter()
            .zip(rights)
            .map(|(saved, right)| saved.ok_or(right))
            .collect())
    }

    /// Inserts the allowed messages of `batch` in its own transaction.
    fn save_allowed(
        &mut self,
        batch: &[Message],
        rights: &[SendRight],
        now: i64,
    ) -> Result<Vec<Option<Saved>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.write_tx()?;
        let saved = Self::insert_batch(&tx, batch, rights, now)?;
        tx.commit()?;
        Ok(saved)
    }

    /// Inserts the messages whose right is [`SendRight::Allowed`] (others get `None`),
    /// deduplicating by `client_ref`, inside the caller's transaction, and records each
    /// one-to-one (recipient, sender) pair in `chat_peers`: one `INSERT OR IGNORE` per
    /// pair and batch, not per message (a batch of 800 from 100 senders holds about 100
    /// pairs), and nothing remembered between transactions, so a pair is never taken
    /// for recorded when its row is gone (a rolled-back save; a deleted user whose id
    /// a new account got).
    fn insert_batch(
        tx: &rusqlite::Transaction<'_>,
        batch: &[Message],
        rights: &[SendRight],
        now: i64,
    ) -> Result<Vec<Option<Saved>>> {
        let mut saved = Vec::with_capacity(batch.len());
        let mut keys = Vec::with_capacity(batch.len());
        let mut pairs = std::collections::HashSet::new();
        {
            let mut peer = tx.prepare_cached(
                "INSERT OR IGNORE INTO chat_peers (user_id, peer_id) VALUES (?1, ?2)",
            )?;
            let mut find = tx.prepare_cached(FIRST_WITH_REF)?;
            // No `RETURNING`: SQLite runs it as a trigger, which makes each insert keep a
            // statement journal (a copy of every page it touches that the transaction had
            // already changed): half of the writer's work in a batch of 800. The id is the
            // connection's last inserted rowid instead.
            //
            // `OR IGNORE`: a message whose (sender, ref) is stored already is not inserted
            // (the unique index finds it while inserting), and only then is the first one
            // looked up, so a new message costs no separate lookup. `IGNORE` would also
            // skip a row that breaks a CHECK or NOT NULL constraint; the lookup finds no
            // first message for such a row, and the batch fails.
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO messages
                     (sender_id, cmd, dst_id, media, content, pic, url, memo, amount,
                      client_ref, created_at, reply_to)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for (m, right) in batch.iter().zip(rights) {
                if *right != SendRight::Allowed {
                    saved.push(None);
                    continue;
                }
                let (cmd, dst) = m.to.cmd_and_dst();
                let inserted = insert
                    .execute(params![
                        m.sender_id,
                        cmd,
                        dst,
                        m.media,
                        m.content,
                        m.pic,
                        m.url,
                        m.memo,
                        m.amount,
                        m.client_ref,
                        now,
                        (m.reply_to != 0).then_some(m.reply_to)
                    ])
                    .map_err(no_such_user)?;
                if inserted == 0 {
                    let first = match &m.client_ref {
                        Some(client_ref) => find
                            .query_row(params![m.sender_id, client_ref], |row| {
                                Ok((row.get(0)?, row.get(1)?))
                            })
                            .optional()?,
                        None => None,
                    };
                    let Some((id, created_at)) = first else {
                        // Not a retry: a constraint the row broke, which IGNORE skipped.
                        return Err(rusqlite::Error::StatementChangedRows(0).into());
                    };
                    saved.push(Some(Saved {
                        id,
                        created_at,
                        duplicate: true,
                    }));
                    continue;
                }
                let id = tx.last_insert_rowid();
                keys.push([m.sender_id, cmd, dst, id]);
                if let Peer::User(to) = m.to {
                    let pair = (to, m.sender_id);
                    if pairs.insert(pair) {
                        peer.execute(params![to, m.sender_id])
                            .map_err(no_such_user)?;
                    }
                }
                saved.push(Some(Saved {
                    id,
                    created_at: now,
                    duplicate: false,
                }));
            }
        }
        index_recent(tx, &mut keys)?;
        settle_recent(tx)?;
        Ok(saved)
    }

    /// The messages `user` should receive with an id above `after_id`, oldest first, at most
    /// `limit`: 1:1 messages sent to them or by them (so their other devices get what they
    /// sent), and messages of their groups sent after they joined (module docs), their own
    /// included. Each message appears once.
    ///
    /// Page by passing the last returned id as the next `after_id`; `0` starts from the
    /// beginning.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn messages_for(&self, user: i64, after_id: i64, limit: usize) -> Result<Vec<Message>> {
        let mut stmt = self.conn.prepare_cached(&messages_for_sql())?;
        let rows = stmt.query_map(params![user, after_id, sql_limit(limit)], message_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A page of a conversation, **newest first**: messages with an id below `before_id`
    /// (all when `None`), at most `limit`. For the next older page pass the last returned
    /// id as `before_id`.
    ///
    /// `Peer::User(p)`: the 1:1 messages between `user` and `p`, both directions.
    /// `Peer::Group(g)`: the group's messages since `user` joined (module docs).
    ///
    /// # Errors
    /// For a group: [`StoreError::NoSuchGroup`], or [`StoreError::NotMember`] if `user` is
    /// not a member.
    pub fn history(
        &self,
        user: i64,
        peer: Peer,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let before = before_id.unwrap_or(i64::MAX);
        let limit = sql_limit(limit);
        let (sql, args) = match peer {
            Peer::User(p) => (history_pair_sql(), [user, p, before, limit]),
            Peer::Group(g) => {
                let join_point = self.join_point(g, user)?;
                (history_group_sql(), [g, join_point, before, limit])
            }
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, message_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The join point of `user` in `group`.
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`], [`StoreError::NotMember`].
    fn join_point(&self, group: i64, user: i64) -> Result<i64> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT g.id, gm.join_msg_id FROM chat_groups g
             LEFT JOIN group_members gm ON gm.group_id = g.id AND gm.user_id = ?2
             WHERE g.id = ?1",
        )?;
        let mut rows = stmt.query([group, user])?;
        let Some(row) = rows.next()? else {
            return Err(StoreError::NoSuchGroup);
        };
        let join_point: Option<i64> = row.get(1)?;
        join_point.ok_or(StoreError::NotMember)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{NewGroup, User};
    use super::*;

    fn with_ref(mut m: Message, r: &str) -> Message {
        m.client_ref = Some(r.to_owned());
        m
    }

    fn contents(msgs: &[Message]) -> Vec<&str> {
        msgs.iter().map(|m| m.content.as_str()).collect()
    }

    fn group(t: &mut TestDb, owner: &User, name: &str) -> i64 {
        t.db.create_group(
            owner.id,
            NewGroup {
                name: name.to_owned(),
                ..NewGroup::default()
            },
            5,
            0,
        )
        .expect("group")
        .id
    }

    /// Three users: a, b, c.
    fn three(t: &mut TestDb) -> (User, User, User) {
        (
            user(&mut t.db, "13800000001", 0),
            user(&mut t.db, "13800000002", 0),
            user(&mut t.db, "13800000003", 0),
        )
    }

    /// The conversation index in two parts (schema step 13): keys gather in the recent
    /// part until [`RECENT_KEYS`], the batch that reaches it moves them all, and every
    /// read (sync, history, conversation list, unread counts, read-marker clamps) sees
    /// both parts, across the boundary between them, in id order.
    #[test]
    fn recent_keys_move_in_one_go_and_reads_see_both_parts() {
        use super::super::ReadMark;
        let mut t = test_db();
        let (a, b, c) = three(&mut t);
        t.db.add_friend(a.id, b.id, 0).expect("friends");
        t.db.add_friend(a.id, c.id, 0).expect("friends");
        // Round robin: a to b, b to a, a to c, one group message.
        let g = group(&mut t, &a, "g");
        let to = [
            (a.id, Peer::User(b.id)),
            (b.id, Peer::User(a.id)),
            (a.id, Peer::User(c.id)),
            (a.id, Peer::Group(g)),
        ];
        let mut sent: Vec<(i64, i64, Peer)> = Vec::new();
        let mut save = |t: &mut TestDb, n: usize| {
            let batch: Vec<_> = (sent.len()..sent.len() + n)
                .map(|i| {
                    let (from, peer) = to[i % to.len()];
                    text(from, peer, &format!("m{i}"))
                })
                .collect();
            let saved = t.db.save_messages(&batch, 1).expect("save");
            for (m, s) in batch.iter().zip(saved) {
                sent.push((s.id, m.sender_id, m.to));
            }
        };
        let short = usize::try_from(RECENT_KEYS).expect("small") - 50;
        for _ in 0..short / 100 {
            save(&mut t, 100);
        }
        save(&mut t, short % 100);
        // The group's creation notice, if any, is a key too.
        let before = assert_indexed(&t.db);
        assert_eq!(before.0, 0, "nothing moved yet");
        assert!(before.1 < RECENT_KEYS, "{before:?}");
        save(&mut t, 100);
        let moved = assert_indexed(&t.db);
        assert_eq!(
            moved,
            (before.1 + 100, 0),
            "the batch that reached the mark moved all"
        );
        save(&mut t, 10);
        assert_eq!(assert_indexed(&t.db), (moved.0, 10));

        let between = |x: i64, y: i64| -> Vec<i64> {
            let mut ids: Vec<i64> = sent
                .iter()
                .filter(|(_, from, peer)| {
                    (*from == x && *peer == Peer::User(y)) || (*from == y && *peer == Peer::User(x))
                })
                .map(|(id, _, _)| *id)
                .collect();
            ids.reverse();
            ids
        };
        // History, newest first, paged across the boundary.
        let ab = between(a.id, b.id);
        let mut paged = Vec::new();
        let mut before_id = None;
        loop {
            let page =
                t.db.history(a.id, Peer::User(b.id), before_id, 37)
                    .expect("history");
            if page.is_empty() {
                break;
            }
            before_id = page.last().map(|m| m.id);
            paged.extend(page.iter().map(|m| m.id));
        }
        assert_eq!(paged, ab);
        // Sync, oldest first, paged across the boundary: b gets a's messages to b and
        // b's own (for b's other devices), nothing of a's to c or of the group.
        let mut owed = between(a.id, b.id);
        owed.reverse();
        let mut synced = Vec::new();
        let mut after = 0;
        loop {
            let page = t.db.messages_for(b.id, after, 53).expect("sync");
            let Some(last) = page.last() else { break };
            after = last.id;
            synced.extend(page.iter().map(|m| m.id));
        }
        assert_eq!(synced, owed);
        let mut to_c = between(a.id, c.id);
        to_c.reverse();
        let c_gets: Vec<i64> =
            t.db.messages_for(c.id, 0, 5000)
                .expect("c")
                .iter()
                .map(|m| m.id)
                .collect();
        assert_eq!(c_gets, to_c);

        // The conversation list and unread counts: b read up to a message in the moved
        // part; what came after it counts, up to the cap.
        let from_a: Vec<i64> = ab
            .iter()
            .rev()
            .copied()
            .filter(|id| sent.iter().any(|(i, from, _)| i == id && *from == a.id))
            .collect();
        let marked = from_a[from_a.len() - 8];
        assert!(marked < sent[sent.len() - 10].0, "marked in the moved part");
        t.db.mark_read(&[ReadMark {
            user: b.id,
            peer: Peer::User(a.id),
            id: marked,
        }])
        .expect("mark");
        let list = t.db.conversations(b.id).expect("list");
        let with_a = list.iter().find(|c| c.dstid == a.id).expect("a");
        assert_eq!(with_a.lastid, ab[0]);
        assert_eq!(with_a.unread, 7);
        assert_eq!(with_a.read, marked);
        assert_eq!(
            t.db.unread_counts(b.id).expect("counts")[&Peer::User(a.id)],
            7
        );
        // A marker past the conversation's end is clamped to its newest message.
        t.db.mark_read(&[ReadMark {
            user: b.id,
            peer: Peer::User(a.id),
            id: i64::MAX / 2,
        }])
        .expect("mark");
        assert_eq!(
            t.db.read_marker(b.id, Peer::User(a.id)).expect("marker"),
            ab[0]
        );
        // And the user's count in the administrator's listing sees both parts.
        let info = t.db.user_info(c.id, 0).expect("info").expect("c");
        assert_eq!(info.messages_sent, 0);
        let by_a: i64 =
            t.db.conn
                .query_row(
                    "SELECT count(*) FROM messages WHERE sender_id = ?1",
                    [a.id],
                    |r| r.get(0),
                )
                .expect("count");
        assert!(by_a > 3000, "{by_a}");
        let info = t.db.user_info(a.id, 0).expect("info").expect("a");
        assert_eq!(info.messages_sent, by_a);
        assert_indexed(&t.db);
    }

    #[test]
    fn batch_gets_increasing_ids_in_order() {
        let mut t = test_db();
        let (a, b, _) = three(&mut t);
        let batch: Vec<_> = (0..10)
            .map(|i| text(a.id, Peer::User(b.id), &format!("m{i}")))
            .collect();
        let saved = t.db.save_messages(&batch, 1_000).expect("save");
        assert_eq!(saved.len(), 10);
        assert!(saved.windows(2).all(|w| w[0].id < w[1].id), "{saved:?}");
        assert!(saved.iter().all(|s| s.created_at == 1_000 && !s.duplicate));

        let more =
            t.db.save_messages(&[text(a.id, Peer::User(b.id), "next")], 2_000)
                .expect("save");
        assert!(more[0].id > saved[9].id);

        let stored = t.db.messages_for(b.id, 0, 100).expect("q");
        assert_eq!(stored.len(), 11);
        assert_eq!(stored[0].content, "m0");
        assert_eq!(stored[0].id, saved[0].id);
        assert_eq!(stored[0].sender_id, a.id);
        assert_eq!((stored[0].cmd(), stored[0].dst_id()), (SINGLE, b.id));
        assert_eq!(stored[0].to, Peer::User(b.id));
        assert_eq!(stored[0].media, 1);
        assert_eq!(stored[0].created_at, 1_000);
        assert_eq!(stored[10].created_at, 2_000);
    }

    #[test]
    fn empty_batch_is_a_no_op() {
        let mut t = test_db();
        assert!(t.db.save_messages(&[], 0).expect("save").is_empty());
    }

    #[test]
    fn all_fields_round_trip() {
        let mut t = test_db();
        let (a, _, _) = three(&mut t);
        let g = group(&mut t, &a, "g");
        let m = Message {
            media: 3,
            content: "内容".to_owned(),
            pic: "p".to_owned(),
            url: "/resource/a.mp3".to_owned(),
            memo: "m".to_owned(),
            amount: 7,
            client_ref: Some("ref-1".to_owned()),
            ..Message::new(a.id, Peer::Group(g))
        };
        let saved =
            t.db.save_messages(std::slice::from_ref(&m), 5)
                .expect("save");
        let got = t.db.messages_for(a.id, 0, 10).expect("q");
        assert_eq!(
            got,
            [Message {
                id: saved[0].id,
                sender_id: a.id,
                to: Peer::Group(g),
                media: 3,
                content: m.content,
                pic: m.pic,
                url: m.url,
                memo: m.memo,
                amount: 7,
                client_ref: m.client_ref,
                created_at: 5,
                ..Message::new(0, Peer::User(0))
            }]
        );
    }

    #[test]
    fn client_ref_dedupes_across_and_within_batches() {
        let mut t = test_db();
        let (a, b, _) = three(&mut t);
        let first =
            t.db.save_messages(&[with_ref(text(a.id, Peer::User(b.id), "hi"), "r1")], 10)
                .expect("save");
        assert!(!first[0].duplicate);

        let batch = [
            with_ref(text(a.id, Peer::User(b.id), "hi again"), "r1"), // retry of an old one
            with_ref(text(a.id, Peer::User(b.id), "new"), "r2"),
            with_ref(text(a.id, Peer::User(b.id), "new, sent twice"), "r2"), // same batch
            text(a.id, Peer::User(b.id), "no ref"),
            text(a.id, Peer::User(b.id), "no ref"), // no ref: never deduped
            with_ref(text(b.id, Peer::User(a.id), "b's r1"), "r1"), // refs are per sender
        ];
        let saved = t.db.save_messages(&batch, 20).expect("save");
        let dup: Vec<_> = saved.iter().map(|s| s.duplicate).collect();
        assert_eq!(dup, [true, false, true, false, false, false]);
        assert_eq!(saved[0].id, first[0].id);
        assert_eq!(saved[0].created_at, 10, "the original's time");
        assert_eq!(saved[2].id, saved[1].id);
        assert_eq!(saved[2].created_at, 20);
        assert_ne!(saved[3].id, saved[4].id);
        assert_ne!(saved[5].id, first[0].id);

        let got = t.db.messages_for(b.id, 0, 100).expect("q");
        assert_eq!(contents(&got), ["hi", "new", "no ref", "no ref", "b's r1"]);
    }

    /// A pair's first message records it in `chat_peers`, and the recipient's sync
    /// finds the message through it: also when the first attempt was rolled back (the
    /// connection must not remember a row the rollback took away), and when another
    /// connection wrote the pair's first message.
    #[test]
    fn the_recipient_finds_a_first_message_after_a_rollback_and_from_another_connection() {
        let mut t = test_db();
        let (a, b, c) = three(&mut t);
        let ghost = Message {
            sender_id: 999,
            ..text(a.id, Peer::User(b.id), "ghost")
        };
        t.db.save_messages(&[text(a.id, Peer::User(b.id), "lost"), ghost], 0)
            .expect_err("no such sender");
        t.db.save_messages(&[text(a.id, Peer::User(b.id), "hi")], 1)
            .expect("save");
        assert_eq!(
            contents(&t.db.messages_for(b.id, 0, 10).expect("q")),
            ["hi"]
        );

        let mut other = Db::open(&t.path()).expect("second connection");
        other
            .save_messages(&[text(c.id, Peer::User(b.id), "from c")], 2)
            .expect("save");
        t.db.save_messages(&[text(c.id, Peer::User(b.id), "again")], 3)
            .expect("save");
        assert_eq!(
            contents(&t.db.messages_for(b.id, 0, 10).expect("q")),
            ["hi", "from c", "again"]
        );
        assert_eq!(
            contents(&other.messages_for(c.id, 0, 10).expect("q")),
            ["from c", "again"]
        );
    }

    /// A deleted user's id can come back (the newest account's id is reused): a message
    /// to the new account must reach its inbox although the same pair of ids wrote
    /// before, on the same connection.
    #[test]
    fn a_reused_user_id_gets_its_inbox() {
        let mut t = test_db();
        let (a, _, c) = three(&mut t);
        t.db.save_messages(&[text(a.id, Peer::User(c.id), "to the old c")], 0)
            .expect("save");
        t.db.delete_user(c.id).expect("delete");
        let again = user(&mut t.db, "13800000009", 1);
        assert_eq!(again.id, c.id, "the id came back");
        t.db.save_messages(&[text(a.id, Peer::User(again.id), "to the new one")], 2)
            .expect("save");
        assert_eq!(
            contents(&t.db.messages_for(again.id, 0, 10).expect("q")),
            ["to the new one"]
        );
    }

    #[test]
    fn a_bad_message_rolls_back_the_batch() {
        let mut t = test_db();
        let (a, b, _) = three(&mut t);
        let batch = [
            text(a.id, Peer::User(b.id), "ok"),
            Message {
                sender_id: 999,
                ..text(a.id, Peer::User(b.id), "ghost")
            },
        ];
        let err = t.db.save_messages(&batch, 0).expect_err("no such sender");
        assert!(matches!(err, StoreError::NoSuchUser), "{err:?}");
        assert!(t.db.messages_for(b.id, 0, 10).expect("q").is_empty());
    }

    #[test]
    fn messages_for_covers_both_directions_of_one_to_one() {
        let mut t = test_db();
        let (a, b, c) = three(&mut t);
        t.db.save_messages(
            &[
                text(a.id, Peer::User(b.id), "a→b"),
                text(b.id, Peer::User(a.id), "b→a"),
                text(c.id, Peer::User(b.id), "c→b"),
                text(a.id, Peer::User(c.id), "a→c"),
                text(a.id, Peer::User(a.id), "a→a"),
            ],
            0,
        )
        .expect("save");
        assert_eq!(
            contents(&t.db.messages_for(a.id, 0, 100).expect("q")),
            ["a→b", "b→a", "a→c", "a→a"]
        );
        assert_eq!(
            contents(&t.db.messages_for(b.id, 0, 100).expect("q")),
            ["a→b", "b→a", "c→b"]
        );
        assert_eq!(
            contents(&t.db.messages_for(c.id, 0, 100).expect("q")),
            ["c→b", "a→c"]
        );
    }

    #[test]
    fn messages_for_sees_groups_only_after_joining() {
        let mut t = test_db();
        let (a, b, c) = three(&mut t);
        let g = group(&mut t, &a, "g");
        let other = group(&mut t, &c, "other");
        t.db.save_messages(&[text(a.id, Peer::Group(g), "before b")], 0)
            .expect("save");
        t.db.join_group(b.id, g, 1).expect("join");
        t.db.save_messages(
            &[
                text(a.id, Peer::Group(g), "after b"),
                text(c.id, Peer::Group(other), "elsewhere"),
                text(b.id, Peer::Group(g), "b says"),
            ],
            2,
        )
        .expect("save");
        assert_eq!(
            contents(&t.db.messages_for(b.id, 0, 100).expect("q")),
            ["after b", "b says"]
        );
        assert_eq!(
            contents(&t.db.messages_for(a.id, 0, 100).expect("q")),
            ["before b", "after b", "b says"]
        );
        assert_eq!(
            contents(&t.db.messages_for(c.id, 0, 100).expect("q")),
            ["elsewhere"]
        );

        // Leave, miss a message, rejoin: the missed one stays missed.
        t.db.leave_group(b.id, g).expect("leave");
        t.db.save_messages(&[text(a.id, Peer::Group(g), "while away")], 3)
            .expect("save");
        assert!(t.db.messages_for(b.id, 0, 100).expect("q").is_empty());
        t.db.join_group(b.id, g, 4).expect("rejoin");
        t.db.save_messages(&[text(a.id, Peer::Group(g), "welcome back")], 5)
            .expect("save");
        assert_eq!(
            contents(&t.db.messages_for(b.id, 0, 100).expect("q")),
            ["welcome back"]
        );
    }

    #[test]
    fn messages_for_merges_in_id_order_and_pages_without_duplicates() {
        let mut t = test_db();
        let (a, b, c) = three(&mut t);
        let g1 = group(&mut t, &a, "g1");
        let g2 = group(&mut t, &c, "g2");
        t.db.join_group(b.id, g1, 0).expect("join");
        t.db.join_group(b.id, g2, 0).expect("join");
        // Interleave every kind of message b receives, plus noise b must not see.
        let mut expected = Vec::new();
        for i in 0..30 {
            let (m, seen) = match i % 6 {
                0 => (text(a.id, Peer::User(b.id), &format!("{i}")), true),
                1 => (text(b.id, Peer::User(c.id), &format!("{i}")), true),
                2 => (text(a.id, Peer::Group(g1), &format!("{i}")), true),
                3 => (text(c.id, Peer::Group(g2), &format!("{i}")), true),
                4 => (text(b.id, Peer::Group(g2), &format!("{i}")), true),
                _ => (text(a.id, Peer::User(c.id), &format!("{i}")), false),
            };
            t.db.save_messages(&[m], i).expect("save");
            if seen {
                expected.push(format!("{i}"));
            }
        }
        let all = t.db.messages_for(b.id, 0, 1_000).expect("q");
        assert_eq!(contents(&all), expected);

        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = t.db.messages_for(b.id, after, 4).expect("q");
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 4);
            after = page.last().expect("non-empty").id;
            paged.extend(page);
        }
        assert_eq!(paged, all);
        assert!(paged.windows(2).all(|w| w[0].id < w[1].id));
        assert!(t.db.messages_for(b.id, 0, 0).expect("q").is_empty());
    }

    /// What a user sent is found per person they wrote to (`chat_peers` in
    /// `messages_for_sql`): with many of them, some written to far more often than the
    /// page size, every page is the next messages in id order, none missed or repeated.
    #[test]
    fn messages_for_finds_what_the_user_sent_to_each_of_many_people() {
        let mut t = test_db();
        let me = user(&mut t.db, "13800000100", 0);
        let others: Vec<User> = (0..7)
            .map(|i| user(&mut t.db, &format!("1380000020{i}"), 0))
            .collect();
        let mut expected = Vec::new();
        // A fixed pseudo-random order: person 0 gets most messages, some get one.
        let mut x: u64 = 7;
        for i in 0..120 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let k = match (x >> 33) % 10 {
                0..=4 => 0,
                r => usize::try_from(r).expect("small") - 4,
            };
            let to = if i % 17 == 0 { me.id } else { others[k].id };
            t.db.save_messages(&[text(me.id, Peer::User(to), &format!("{i}"))], i)
                .expect("save");
            expected.push(format!("{i}"));
            // Noise between the others, which `me` must not see.
            t.db.save_messages(&[text(others[1].id, Peer::User(others[2].id), "x")], i)
                .expect("save");
        }
        let all = t.db.messages_for(me.id, 0, 1_000).expect("q");
        assert_eq!(contents(&all), expected);
        for limit in [1, 3, 10] {
            let mut paged = Vec::new();
            let mut after = 0;
            loop {
                let page = t.db.messages_for(me.id, after, limit).expect("q");
                if page.is_empty() {
                    break;
                }
                assert!(page.len() <= limit);
                after = page.last().expect("non-empty").id;
                paged.extend(page);
            }
            assert_eq!(paged, all, "pages of {limit}");
        }
    }

    #[test]
    fn history_of_a_pair_pages_newest_first() {
        let mut t = test_db();
        let (a, b, c) = three(&mut t);
        for i in 0..10 {
            let m = if i % 2 == 0 {
                text(a.id, Peer::User(b.id), &format!("{i}"))
            } else {
                text(b.id, Peer::User(a.id), &format!("{i}"))
            };
            t.db.save_messages(&[m, text(a.id, Peer::User(c.id), "noise")], i)
                .expect("save");
        }
        let page1 = t.db.history(a.id, Peer::User(b.id), None, 4).expect("q");
        assert_eq!(contents(&page1), ["9", "8", "7", "6"]);
        let page2 =
            t.db.history(a.id, Peer::User(b.id), Some(page1[3].id), 4)
                .expect("q");
        assert_eq!(contents(&page2), ["5", "4", "3", "2"]);
        let page3 =
            t.db.history(b.id, Peer::User(a.id), Some(page2[3].id), 4)
                .expect("q");
        assert_eq!(contents(&page3), ["1", "0"], "same from the other side");

        // Talking to oneself: each message once.
        t.db.save_messages(&[text(c.id, Peer::User(c.id), "note")], 20)
            .expect("save");
        assert_eq!(
            contents(&t.db.history(c.id, Peer::User(c.id), None, 10).expect("q")),
            ["note"]
        );
    }

    #[test]
    fn group_history_needs_membership_and_starts_at_join() {
        let mut t = test_db();
        let (a, b, c) = three(&mut t);
        let g = group(&mut t, &a, "g");
        t.db.save_messages(&[text(a.id, Peer::Group(g), "old")], 0)
            .expect("save");
        t.db.join_group(b.id, g, 1).expect("join");
        for i in 0..5 {
            t.db.save_messages(&[text(a.id, Peer::Group(g), &format!("{i}"))], i)
                .expect("save");
        }
        let page1 = t.db.history(b.id, Peer::Group(g), None, 3).expect("q");
        assert_eq!(contents(&page1), ["4", "3", "2"]);
        let page2 =
            t.db.history(b.id, Peer::Group(g), Some(page1[2].id), 3)
                .expect("q");
        assert_eq!(contents(&page2), ["1", "0"], "nothing from before b joined");
        let owner = t.db.history(a.id, Peer::Group(g), None, 10).expect("q");
        assert_eq!(contents(&owner), ["4", "3", "2", "1", "0", "old"]);

        assert!(matches!(
            t.db.history(c.id, Peer::Group(g), None, 10),
            Err(StoreError::NotMember)
        ));
        assert!(matches!(
            t.db.history(a.id, Peer::Group(g + 100), None, 10),
            Err(StoreError::NoSuchGroup)
        ));
    }

    #[test]
    fn deleting_a_group_deletes_its_messages_and_ids_are_not_reused() {
        let mut t = test_db();
        let (a, b, _) = three(&mut t);
        let g = group(&mut t, &a, "g");
        t.db.save_messages(&[text(a.id, Peer::User(b.id), "keep")], 0)
            .expect("save");
        let last =
            t.db.save_messages(&[text(a.id, Peer::Group(g), "gone")], 0)
                .expect("save")[0]
                .id;
        t.db.leave_group(a.id, g).expect("delete group");
        assert_eq!(
            contents(&t.db.messages_for(a.id, 0, 10).expect("q")),
            ["keep"]
        );
        let next =
            t.db.save_messages(&[text(a.id, Peer::User(b.id), "next")], 0)
                .expect("save")[0]
                .id;
        assert!(next > last, "AUTOINCREMENT never reuses {last}");
    }

    /// The query plans of the hot queries use indexes: no full scan of `messages` (nor of
    /// `group_members`), and only the group range needs a sort.
    #[test]
    fn hot_queries_use_indexes() {
        let t = test_db();
        let plan = |sql: &str, n: usize| -> Vec<String> {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut stmt = t.db.conn.prepare(&explain).expect("prepare");
            let args: Vec<i64> = (1..=i64::try_from(n).expect("small")).collect();
            stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .expect("explain")
                .collect::<rusqlite::Result<_>>()
                .expect("rows")
        };
        let cases = [
            ("messages_for", messages_for_sql(), 3),
            ("history pair", history_pair_sql(), 4),
            ("history group", history_group_sql(), 4),
        ];
        for (name, sql, n) in cases {
            let lines = plan(&sql, n);
            let text = lines.join("\n");
            assert!(
                !lines.iter().any(|l| l.starts_with("SCAN ")),
                "{name} scans a table:\n{text}"
            );
            // Every read of `messages` is an id range inside one conversation, never a
            // walk over all messages of one kind, or a primary-key lookup (a quote, or a
            // row one of the per-person ranges found).
            for l in lines.iter().filter(|l| l.starts_with("SEARCH m ")) {
                assert!(
                    ((l.contains("dst_id=?") || l.contains("sender_id=?"))
                        && (l.contains("id>?") || l.contains("id<?")))
                        || l.contains("INTEGER PRIMARY KEY (rowid=?)"),
                    "{name} reads messages too widely: {l}\n{text}"
                );
            }
            // The conversation index is read by its whole key, in both parts: one id range
            // per conversation and direction.
            for l in lines.iter().filter(|l| l.contains("sender_dst")) {
                assert!(
                    l.starts_with("SEARCH sender_dst USING PRIMARY KEY (sender_id=? AND cmd=? AND dst_id=? AND id")
                        || l.starts_with("SEARCH sender_dst_recent USING PRIMARY KEY (sender_id=? AND cmd=? AND dst_id=? AND id"),
                    "{name} reads the conversation index too widely: {l}\n{text}"
                );
            }
            assert!(
                !lines.iter().any(|l| l.starts_with("SEARCH messages ")),
                "{name} reads messages by another index:\n{text}"
            );
            let uses = |index: &str| lines.iter().any(|l| l.contains(index));
            match name {
                "messages_for" => {
                    // Who wrote to the user, and whom the user wrote to.
                    assert!(
                        uses("SEARCH cp USING PRIMARY KEY (user_id=?)"),
                        "{name}:\n{text}"
                    );
                    assert!(uses("chat_peers_by_peer (peer_id=?)"), "{name}:\n{text}");
                    assert!(
                        uses("messages_by_group (dst_id=? AND id>?)"),
                        "{name}:\n{text}"
                    );
                    assert!(uses("group_members_by_user (user_id=?)"), "{name}:\n{text}");
                    assert!(uses("SEARCH sender_dst_recent USING"), "{name}:\n{text}");
                }
                "history pair" => {
                    // Both directions in both parts, merged in id order: nothing sorted.
                    let parts = |p: &str| lines.iter().filter(|l| l.starts_with(p)).count();
                    assert_eq!(parts("SEARCH sender_dst USING"), 2, "{name}:\n{text}");
                    assert_eq!(
                        parts("SEARCH sender_dst_recent USING"),
                        2,
                        "{name}:\n{text}"
                    );
                    assert!(!text.contains("TEMP B-TREE"), "{name} sorts:\n{text}");
                }
                _ => {
                    assert!(uses("messages_by_group"), "{name}:\n{text}");
                    assert!(!text.contains("TEMP B-TREE"), "{name} sorts:\n{text}");
                }
            }
        }
        // A retry finds its first message in the reference index, whoever sent it.
        let lines = plan(FIRST_WITH_REF, 2);
        assert_eq!(
            lines,
            ["SEARCH messages USING INDEX messages_by_client_ref (client_ref=? AND sender_id=?)"]
        );
        // Sessions and friends are looked up by their primary keys.
        let lines = plan(
            "SELECT user_id FROM sessions WHERE token_digest = ?1 AND expires_at > ?2",
            2,
        );
        assert!(lines.iter().all(|l| l.starts_with("SEARCH")), "{lines:?}");
    }
}

//! The schema, as a list of migrations keyed on `PRAGMA user_version`.
//!
//! Step `i` of [`MIGRATIONS`] brings the file from version `i` to `i + 1`. Each step runs in
//! its own `BEGIN IMMEDIATE` transaction together with the `user_version` bump, so a crash
//! leaves the file at a version boundary, and two processes opening a fresh file at once
//! cannot both apply a step. Never edit a released step: append a new one.
//!
//! Tables are `STRICT` (a wrong type is an error, not a silent conversion). Times are unix
//! milliseconds. Text columns the client may leave empty are `NOT NULL DEFAULT ''` so rows
//! never hold a NULL where fastIM's JSON has a string.

use rusqlite::{Connection, TransactionBehavior};

use super::{Result, StoreError};

/// Version 1: users, sessions, friends, groups, members, messages.
const V1: &str = r#"
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    mobile        TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    nickname      TEXT    NOT NULL DEFAULT '',
    avatar        TEXT    NOT NULL DEFAULT '',
    sex           TEXT    NOT NULL DEFAULT 'U',
    memo          TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL
) STRICT;

-- Only the SHA-256 of a token is stored (see secret::token_digest).
CREATE TABLE sessions (
    token_digest BLOB    PRIMARY KEY CHECK (length(token_digest) = 32),
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX sessions_by_expiry ON sessions(expires_at);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- Friendship is mutual: two rows, (a, b) and (b, a), written in one transaction.
CREATE TABLE friends (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    friend_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, friend_id),
    CHECK (user_id <> friend_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX friends_by_friend ON friends(friend_id);

-- fastIM's "community". Names compare byte for byte (BINARY collation): case-sensitive.
CREATE TABLE chat_groups (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    owner_id   INTEGER NOT NULL REFERENCES users(id),
    icon       TEXT    NOT NULL DEFAULT '',
    cate       INTEGER NOT NULL DEFAULT 0,
    memo       TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX chat_groups_by_owner ON chat_groups(owner_id);

-- join_msg_id: the largest message id when the member joined; the member receives the
-- group's messages with a larger id (see messages.rs).
CREATE TABLE group_members (
    group_id    INTEGER NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT    NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at   INTEGER NOT NULL,
    join_msg_id INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX group_members_by_user ON group_members(user_id, group_id, join_msg_id);

-- AUTOINCREMENT: an id is never reused, even after the newest rows are deleted, so ids
-- only grow and a client's "after_id" cursor stays valid.
-- dst_id is a user id (cmd 10) or a group id (cmd 11): no foreign key.
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_id  INTEGER NOT NULL REFERENCES users(id),
    cmd        INTEGER NOT NULL CHECK (cmd IN (10, 11)),
    dst_id     INTEGER NOT NULL,
    media      INTEGER NOT NULL DEFAULT 0,
    content    TEXT    NOT NULL DEFAULT '',
    pic        TEXT    NOT NULL DEFAULT '',
    url        TEXT    NOT NULL DEFAULT '',
    memo       TEXT    NOT NULL DEFAULT '',
    amount     INTEGER NOT NULL DEFAULT 0,
    client_ref TEXT,
    created_at INTEGER NOT NULL
) STRICT;
-- Retries: one message per (sender, client reference).
CREATE UNIQUE INDEX messages_by_client_ref ON messages(sender_id, client_ref)
    WHERE client_ref IS NOT NULL;
-- Inbox of a user (cmd 10) or of a group (cmd 11), in id order; group history.
CREATE INDEX messages_by_dst ON messages(cmd, dst_id, id);
-- What a user sent in 1:1 chats, in id order (for their other devices).
CREATE INDEX messages_by_sender ON messages(sender_id, cmd, id);
-- 1:1 history between two users: one range per direction.
CREATE INDEX messages_by_pair ON messages(sender_id, dst_id, id) WHERE cmd = 10;
"#;

/// Version 2: a user an administrator blocked (`fastim admin user block`) cannot log in
/// or send. `ADD COLUMN` with a constant default rewrites no row, so the step is instant
/// on a big file and safe while a server reads it.
const V2: &str = r#"
ALTER TABLE users ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1));
"#;

/// Version 3: what a running server must notice without a restart, and where retention
/// has cut history.
///
/// `revocations` is written by `fastim admin` in the same transaction as the change it
/// announces (a block, a deletion, ended sessions); the server polls it by `seq` and
/// closes the sockets concerned (see `revocations.rs`). `AUTOINCREMENT`: a `seq` is never
/// reused after old rows are pruned, so a server's cursor never skips a new row.
///
/// `retention` holds one row: `horizon`, the largest message id `--history-days` has
/// removed. Every message with an id up to it is gone; history starts after it (see
/// `retention.rs`).
const V3: &str = r#"
CREATE TABLE revocations (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- NULL: every user.
    user_id      INTEGER,
    -- NULL: every session of the user (or of everyone).
    token_digest BLOB CHECK (token_digest IS NULL OR length(token_digest) = 32),
    reason       TEXT    NOT NULL CHECK (reason IN ('blocked', 'deleted', 'revoked', 'password')),
    CHECK (user_id IS NOT NULL OR token_digest IS NULL)
) STRICT;

CREATE TABLE retention (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    horizon INTEGER NOT NULL CHECK (horizon >= 0)
) STRICT;
INSERT INTO retention (id, horizon) VALUES (1, 0);
"#;

/// Version 4: when each user was last seen online (unix ms; 0: not since this
/// version), written by the chat server as a user's last connection closes, so that
/// contacts see it across restarts. `ADD COLUMN` with a constant default: instant.
const V4: &str = r#"
ALTER TABLE users ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0 CHECK (last_seen >= 0);
"#;

/// Version 5: read markers. `msg_id` is the newest message of the conversation (`cmd`
/// 10 with user `dst_id`, `cmd` 11 in group `dst_id`) that `user_id` has read; it only
/// grows (`reads.rs`). `dst_id` has no foreign key, as in `messages`: a marker left by a
/// deleted group or user names ids older than any later message, so it reads nothing new.
const V5: &str = r#"
CREATE TABLE read_markers (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    cmd     INTEGER NOT NULL CHECK (cmd IN (10, 11)),
    dst_id  INTEGER NOT NULL,
    msg_id  INTEGER NOT NULL CHECK (msg_id > 0),
    PRIMARY KEY (user_id, cmd, dst_id)
) STRICT, WITHOUT ROWID;
"#;

/// Recall, edit and reply (`changes.rs`): when the sender recalled the message (its
/// content, pic, url, memo and amount are cleared then; the row and its id stay), when
/// they last edited it, and the message it replies to. Columns added with NULL
/// defaults: SQLite changes only the schema, not the rows, so the step is instant
/// whatever the file's size. `reply_to` has no foreign key: retention removes old
/// messages, and a reply to one simply loses its quote.
const V6: &str = r#"
ALTER TABLE messages ADD COLUMN recalled_at INTEGER;
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
"#;

/// Version 7: friendship by consent (`requests.rs`): a friend request waits in `friend_requests`
/// until the addressee accepts (the `friends` rows are written, the request deleted)
/// or declines; `blocks` holds who blocked whom. Each user's lists are an index range
/// in both directions; every row goes with either user.
const V7: &str = r#"
CREATE TABLE friend_requests (
    from_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    to_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (from_id, to_id),
    CHECK (from_id <> to_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX friend_requests_to ON friend_requests(to_id, created_at);

CREATE TABLE blocks (
    blocker_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    blocked_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX blocks_by_blocked ON blocks(blocked_id);
"#;

/// Pictures uploaded without a session (`uploads.rs`): fastIM's register page uploads
/// the avatar before the account exists. One row per stored file, the picture and its
/// thumbnail, each with `upload`, the name of the picture it came with, and when it was
/// last uploaded that way. A row goes when an account takes the file (its avatar, or
/// the same picture uploaded with a session); a file whose row is a day old is removed.
/// A file without a row is never removed.
const ANONYMOUS_UPLOADS: &str = r#"
CREATE TABLE anonymous_uploads (
    name        TEXT    PRIMARY KEY,
    upload      TEXT    NOT NULL,
    uploaded_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX anonymous_uploads_by_upload ON anonymous_uploads(upload);
CREATE INDEX anonymous_uploads_by_time ON anonymous_uploads(uploaded_at);
"#;

/// The change log (`changes.rs`): one row per recalled or edited message, the latest
/// change of it, under a `seq` that only grows (`AUTOINCREMENT`: never reused after
/// rows are removed), so that sync can send a device the changes after the last `seq`
/// it has. `cmd`, `dst_id` and `sender_id` are the message's, copied so that the
/// changes of a user's conversations are found by index ranges, by recipient and by
/// sender. A row goes with its message (retention,
/// an administrator deleting a user or a group): `ON DELETE CASCADE`, through the
/// index on `message_id`.
const MESSAGE_CHANGES: &str = r#"
CREATE TABLE message_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    cmd        INTEGER NOT NULL CHECK (cmd IN (10, 11)),
    dst_id     INTEGER NOT NULL,
    sender_id  INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX message_changes_by_message ON message_changes(message_id);
CREATE INDEX message_changes_by_dst ON message_changes(cmd, dst_id, seq);
CREATE INDEX message_changes_by_sender ON message_changes(sender_id, cmd, seq);
"#;

/// Version 10: one index for what a user sent instead of two. Every index a message is
/// written to costs the chat writer about two 4 KiB WAL pages per busy conversation in
/// every commit (BENCHMARKS.md, "Chat"), and a one-to-one message went into four:
/// `messages_by_sender (sender_id, cmd, id)` and `messages_by_pair (sender_id, dst_id, id)
/// WHERE cmd = 10` were both ordered by sender first. `(sender_id, cmd, dst_id, id)` serves
/// what the pair index served (the 1:1 history and read markers: one range per
/// direction), what the sender index served for counting or deleting a user's messages,
/// and for sync what a user sent after a cursor: one range per person they wrote to (at
/// this version found by skipping through the index; since step 11 named in
/// `chat_peers`). Building it reads the table once, at the first start of this version.
const ONE_SENDER_INDEX: &str = r#"
CREATE INDEX messages_by_sender_dst ON messages(sender_id, cmd, dst_id, id);
DROP INDEX messages_by_sender;
DROP INDEX messages_by_pair;
"#;

/// Version 11: who wrote to whom, so that a one-to-one message is written to two
/// indexes instead of three. `chat_peers` has a row (`user_id`, `peer_id`) once `peer_id`
/// has sent `user_id` a one-to-one message: written with the first such message, and
/// after that an `INSERT OR IGNORE` per pair and batch that changes nothing (one for the
/// seven or so messages of a conversation in a commit; `messages.rs`). A user's inbox is then one `messages_by_sender_dst` range per person
/// who wrote to them, and what they sent one range per person they wrote to
/// (`chat_peers_by_peer`), and `messages_by_dst (cmd, dst_id, id)` is needed only for
/// groups: `messages_by_group (dst_id, id) WHERE cmd = 11`. Every index a message is
/// written to costs the writer about two WAL pages per busy conversation in every
/// commit (BENCHMARKS.md, "Chat"). The step fills `chat_peers` from the messages there
/// are (one pass over the table) and builds the group index from the group messages.
const CHAT_PEERS: &str = r#"
CREATE TABLE chat_peers (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    peer_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, peer_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX chat_peers_by_peer ON chat_peers(peer_id);
INSERT INTO chat_peers (user_id, peer_id)
    SELECT DISTINCT dst_id, sender_id FROM messages
    WHERE cmd = 10 AND dst_id IN (SELECT id FROM users);
CREATE INDEX messages_by_group ON messages(dst_id, id) WHERE cmd = 11;
DROP INDEX messages_by_dst;
"#;

/// Version 12: the retry index ordered by the client's reference first. Keyed
/// `(sender_id, client_ref)`, every busy sender had its own insertion point in it, and
/// each cost the writer about two 4 KiB WAL pages in every commit (the leaf there is full
/// and SQLite rebalances it nearly every time; BENCHMARKS.md, "Chat"). Clients make
/// references that grow with time (the web client's start with the time in
/// milliseconds; PROTOCOL.md asks for unique ones), so keyed `(client_ref, sender_id)`
/// a commit's new references land together near the end of the index, on a few pages
/// whoever sent them. A retry is still found by its (sender, reference), both equal.
const REFS_FIRST: &str = r#"
DROP INDEX messages_by_client_ref;
CREATE UNIQUE INDEX messages_by_client_ref ON messages(client_ref, sender_id)
    WHERE client_ref IS NOT NULL;
"#;

/// Version 13: the conversation index kept by the store, in two parts, instead of by
/// SQLite. `messages_by_sender_dst (sender_id, cmd, dst_id, id)` had one insertion point
/// per busy conversation (sender and recipient), each inside a full leaf that SQLite
/// rebalanced nearly every commit: about 1.8 of the writer's 4 KiB WAL pages per busy
/// conversation in every commit, 178 of the 220 pages of a commit of 650 messages at 100
/// busy pairs (BENCHMARKS.md, "Chat"). The same keys now live in two tables: the writer
/// adds each new message's to `sender_dst_recent`, which stays small (at most about
/// [`RECENT_KEYS`](super::messages::RECENT_KEYS) rows on about twenty pages, so a commit
/// rewrites at most those), and moves them all into `sender_dst` in one go once that many
/// have gathered, so each busy conversation's insertion point there is visited once per
/// few thousand messages instead of once per commit. Every query that read the index reads
/// both parts (one more seek each; `messages.rs` checks the plans). Every message's key
/// is in exactly one of them: inserts go through the store (`messages.rs`,
/// `group_admin.rs`; no insert trigger, which would make every insert keep a statement
/// journal), deletes through the trigger below, and a message's id, sender, kind and
/// recipient never change. The step copies the old index in its order and drops it.
const SENDER_DST_TABLES: &str = r#"
CREATE TABLE sender_dst (
    sender_id INTEGER NOT NULL,
    cmd       INTEGER NOT NULL,
    dst_id    INTEGER NOT NULL,
    id        INTEGER NOT NULL,
    PRIMARY KEY (sender_id, cmd, dst_id, id)
) STRICT, WITHOUT ROWID;
CREATE TABLE sender_dst_recent (
    sender_id INTEGER NOT NULL,
    cmd       INTEGER NOT NULL,
    dst_id    INTEGER NOT NULL,
    id        INTEGER NOT NULL,
    PRIMARY KEY (sender_id, cmd, dst_id, id)
) STRICT, WITHOUT ROWID;
INSERT INTO sender_dst (sender_id, cmd, dst_id, id)
    SELECT sender_id, cmd, dst_id, id FROM messages INDEXED BY messages_by_sender_dst
    ORDER BY sender_id, cmd, dst_id, id;
DROP INDEX messages_by_sender_dst;
CREATE TRIGGER messages_unindex AFTER DELETE ON messages BEGIN
    DELETE FROM sender_dst WHERE sender_id = old.sender_id AND cmd = old.cmd
        AND dst_id = old.dst_id AND id = old.id;
    DELETE FROM sender_dst_recent WHERE sender_id = old.sender_id AND cmd = old.cmd
        AND dst_id = old.dst_id AND id = old.id;
END;
CREATE TRIGGER messages_keep_keys BEFORE UPDATE OF id, sender_id, cmd, dst_id ON messages
BEGIN
    SELECT RAISE(ABORT, 'a message keeps its id, sender and recipient');
END;
"#;

/// The migration steps, oldest first. `MIGRATIONS[i]` takes version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    V1,
    V2,
    V3,
    V4,
    V5,
    V6,
    V7,
    ANONYMOUS_UPLOADS,
    MESSAGE_CHANGES,
    ONE_SENDER_INDEX,
    CHAT_PEERS,
    REFS_FIRST,
    SENDER_DST_TABLES,
];

/// The schema version this build creates and understands.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// `PRAGMA user_version` of the connection's main database.
pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Applies the steps the file lacks; returns how many were applied (0 when up to date).
///
/// # Errors
/// [`StoreError::SchemaTooNew`] if the file's version is above [`LATEST`] (it was written
/// by a newer build, whose data this one could corrupt); [`StoreError::Sqlite`] if a step
/// fails, in which case that step is rolled back and the earlier ones stay applied.
pub fn migrate(conn: &mut Connection) -> Result<usize> {
    // The common case, an up-to-date file, takes no write lock.
    if user_version(conn)? == LATEST {
        return Ok(0);
    }
    let mut applied = 0;
    for (from, step) in (0_i64..).zip(MIGRATIONS) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read inside the write lock: another process may have migrated meanwhile.
        let version = user_version(&tx)?;
        if version > LATEST {
            return Err(StoreError::SchemaTooNew {
                found: version,
                known: LATEST,
            });
        }
        if version > from {
            continue;
        }
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", from + 1)?;
        tx.commit()?;
        applied += 1;
    }
    let version = user_version(conn)?;
    if version > LATEST {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: LATEST,
        });
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    #[test]
    fn fresh_file_gets_every_step_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("m.db")).expect("open");
        assert_eq!(user_version(&conn).expect("version"), 0);
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len());
        assert_eq!(user_version(&conn).expect("version"), LATEST);
        assert_eq!(migrate(&mut conn).expect("again"), 0);
        assert_eq!(
            tables(&conn),
            [
                "anonymous_uploads",
                "blocks",
                "chat_groups",
                "chat_peers",
                "friend_requests",
                "friends",
                "group_members",
                "message_changes",
                "messages",
                "read_markers",
                "retention",
                "revocations",
                "sender_dst",
                "sender_dst_recent",
                "sessions",
                "sqlite_sequence",
                "users"
            ]
        );
    }

    #[test]
    fn a_failing_step_leaves_the_version_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("m.db")).expect("open");
        // A table that collides with the first step makes it fail.
        conn.execute_batch("CREATE TABLE users (x)")
            .expect("collide");
        assert!(matches!(migrate(&mut conn), Err(StoreError::Sqlite(_))));
        assert_eq!(user_version(&conn).expect("version"), 0);
        assert_eq!(tables(&conn), ["users"], "the failed step was rolled back");
    }

    #[test]
    fn a_version_1_file_gains_the_blocked_flag_and_keeps_its_users() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("m.db")).expect("open");
        conn.execute_batch(V1).expect("v1");
        conn.pragma_update(None, "user_version", 1).expect("set");
        conn.execute(
            "INSERT INTO users (mobile, password_hash, created_at) VALUES ('13800000001', 'h', 1)",
            [],
        )
        .expect("old user");
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len() - 1);
        assert_eq!(user_version(&conn).expect("version"), LATEST);
        let blocked: i64 = conn
            .query_row("SELECT blocked FROM users", [], |r| r.get(0))
            .expect("blocked");
        assert_eq!(blocked, 0, "existing users are not blocked");
        assert!(
            conn.execute("UPDATE users SET blocked = 2", []).is_err(),
            "only 0 or 1"
        );
    }

    #[test]
    fn a_version_2_file_gains_revocations_and_an_empty_retention_horizon() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("m.db")).expect("open");
        conn.execute_batch(V1).expect("v1");
        conn.execute_batch(V2).expect("v2");
        conn.pragma_update(None, "user_version", 2).expect("set");
        conn.execute(
            "INSERT INTO users (mobile, password_hash, created_at) VALUES ('13800000001', 'h', 1)",
            [],
        )
        .expect("old user");
        conn.execute(
            "INSERT INTO messages (sender_id, cmd, dst_id, created_at) VALUES (1, 10, 1, 1)",
            [],
        )
        .expect("old message");
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len() - 2);
        let horizon: i64 = conn
            .query_row("SELECT horizon FROM retention", [], |r| r.get(0))
            .expect("horizon");
        assert_eq!(horizon, 0, "nothing removed yet");
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .expect("count");
        assert_eq!(kept, 1);
        assert!(
            conn.execute("INSERT INTO retention VALUES (2, 0)", [])
                .is_err(),
            "one row only"
        );
        assert!(
            conn.execute(
                "INSERT INTO revocations (user_id, token_digest, reason) VALUES (NULL, zeroblob(32), 'revoked')",
                [],
            )
            .is_err(),
            "a session belongs to a user"
        );
        assert!(
            conn.execute(
                "INSERT INTO revocations (user_id, reason) VALUES (1, 'tired')",
                [],
            )
            .is_err(),
            "known reasons only"
        );
    }

    #[test]
    fn a_version_3_file_gains_last_seen_with_nobody_seen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("m.db")).expect("open");
        for step in [V1, V2, V3] {
            conn.execute_batch(step).expect("step");
        }
        conn.pragma_update(None, "user_version", 3).expect("set");
        conn.execute(
            "INSERT INTO users (mobile, password_hash, created_at) VALUES ('13800000001', 'h', 1)",
            [],
        )
        .expect("old user");
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len() - 3);
        let seen: i64 = conn
            .query_row("SELECT last_seen FROM users", [], |r| r.get(0))
            .expect("last_seen");
        assert_eq!(seen, 0);
        assert!(
            conn.execute("UPDATE users SET last_seen = -1", []).is_err(),
            "never negative"
        );
    }

    #[test]
    fn a_version_4_file_gains_read_markers_that_hold_message_ids() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("m.db")).expect("open");
        for step in [V1, V2, V3, V4] {
            conn.execute_batch(step).expect("step");
        }
        conn.pragma_update(None, "user_version", 4).expect("set");
        conn.execute(
            "INSERT INTO users (mobile, password_hash, created_at) VALUES ('13800000001', 'h', 1)",
            [],
        )
        .expect("old user");
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len() - 4);
        conn.execute("INSERT INTO read_markers VALUES (1, 10, 2, 5)", [])
            .expect("a marker");
        for bad in [
            "INSERT INTO read_markers VALUES (1, 10, 2, 6)",
            "INSERT INTO read_markers VALUES (1, 12, 3, 6)",
            "INSERT INTO read_markers VALUES (1, 11, 3, 0)",
        ] {
            assert!(conn.execute(bad, []).is_err(), "{bad}");
        }
    }

    #[test]
    fn newer_version_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("m.db")).expect("open");
        conn.pragma_update(None, "user_version", LATEST + 7)
            .expect("set");
        match migrate(&mut conn) {
            Err(StoreError::SchemaTooNew { found, known }) => {
                assert_eq!((found, known), (LATEST + 7, LATEST));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn the_recall_step_adds_empty_columns_to_existing_messages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("m.db")).expect("open");
        for step in [V1, V2, V3, V4, V5] {
            conn.execute_batch(step).expect("step");
        }
        conn.pragma_update(None, "user_version", 5).expect("set");
        conn.execute(
            "INSERT INTO users (mobile, password_hash, created_at) VALUES ('13800000001', 'h', 1)",
            [],
        )
        .expect("old user");
        conn.execute(
            "INSERT INTO messages (sender_id, cmd, dst_id, content, created_at) VALUES (1, 10, 1, 'hi', 1)",
            [],
        )
        .expect("old message");
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len() - 5);
        let row: (String, Option<i64>, Option<i64>, Option<i64>) = conn
            .query_row(
                "SELECT content, recalled_at, edited_at, reply_to FROM messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("row");
        assert_eq!(row, ("hi".to_owned(), None, None, None));
    }

    /// A file at `version` (the steps up to it applied, as a build of that version
    /// left it), with a user for each of `mobiles`.
    fn file_at(dir: &tempfile::TempDir, version: usize, mobiles: &[&str]) -> Connection {
        let conn = Connection::open(dir.path().join("m.db")).expect("open");
        for (v, step) in (1..).zip(&MIGRATIONS[..version]) {
            conn.execute_batch(step).expect("step");
            conn.pragma_update(None, "user_version", v).expect("set");
        }
        for mobile in mobiles {
            conn.execute(
                "INSERT INTO users (mobile, password_hash, created_at) VALUES (?1, 'h', 1)",
                [mobile],
            )
            .expect("user");
        }
        conn
    }

    fn assert_intact(conn: &Connection) {
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(check, "ok");
    }

    /// Step 10 on a file with messages: the two sender indexes give way to one that
    /// already holds every existing message, and the queries that used them still find
    /// them (`messages.rs` checks the plans).
    #[test]
    fn the_sender_index_step_indexes_existing_messages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = file_at(&dir, 9, &["13800000001", "13800000002"]);
        for (sender, cmd, dst) in [(1, 10, 2), (2, 10, 1), (1, 10, 2), (1, 11, 7)] {
            conn.execute(
                "INSERT INTO messages (sender_id, cmd, dst_id, created_at) VALUES (?1, ?2, ?3, 1)",
                [sender, cmd, dst],
            )
            .expect("message");
        }
        conn.execute_batch(ONE_SENDER_INDEX).expect("step 10");
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'messages' ORDER BY name")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            indexes,
            [
                "messages_by_client_ref",
                "messages_by_dst",
                "messages_by_sender_dst"
            ]
        );
        let sent: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages INDEXED BY messages_by_sender_dst
                 WHERE sender_id = 1 AND cmd = 10 AND dst_id = 2",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(sent, 2);
        assert_intact(&conn);
    }

    /// Step 11 on a file with messages: `chat_peers` names who wrote to whom (one-to-one
    /// only, each pair once), and group messages are in the new group index.
    #[test]
    fn the_peers_step_finds_who_wrote_to_whom() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = file_at(&dir, 10, &["13800000001", "13800000002", "13800000003"]);
        for (sender, cmd, dst) in [(1, 10, 2), (1, 10, 2), (2, 10, 1), (3, 10, 3), (1, 11, 7)] {
            conn.execute(
                "INSERT INTO messages (sender_id, cmd, dst_id, created_at) VALUES (?1, ?2, ?3, 1)",
                [sender, cmd, dst],
            )
            .expect("message");
        }
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len() - 10);
        let peers: Vec<(i64, i64)> = conn
            .prepare("SELECT user_id, peer_id FROM chat_peers ORDER BY 1, 2")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(peers, [(1, 2), (2, 1), (3, 3)]);
        let in_group: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages INDEXED BY messages_by_group
                 WHERE cmd = 11 AND dst_id = 7",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(in_group, 1);
        assert_intact(&conn);
    }

    /// Step 12 on a file with references: the index holds every stored one in its new
    /// order, and a sender still cannot store a reference twice while another sender may
    /// use the same one.
    #[test]
    fn the_refs_first_step_keeps_retries_unique() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = file_at(&dir, 11, &["13800000001", "13800000002"]);
        let insert = |conn: &Connection, sender: i64, client_ref: Option<&str>| {
            conn.execute(
                "INSERT INTO messages (sender_id, cmd, dst_id, client_ref, created_at)
                 VALUES (?1, 10, 1, ?2, 1)",
                rusqlite::params![sender, client_ref],
            )
        };
        for (sender, client_ref) in [(1, Some("w1")), (1, Some("w2")), (2, Some("w1")), (1, None)] {
            insert(&conn, sender, client_ref).expect("message");
        }
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len() - 11);
        let indexed: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages INDEXED BY messages_by_client_ref
                 WHERE client_ref IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(indexed, 3);
        let err = insert(&conn, 1, Some("w2")).expect_err("a reference used twice");
        assert!(
            err.to_string().contains("UNIQUE constraint failed"),
            "{err}"
        );
        insert(&conn, 2, Some("w2")).expect("another sender's reference");
        insert(&conn, 1, None).expect("messages without a reference");
        assert_intact(&conn);
    }

    /// Step 13 on a file with messages: every message's key is copied into `sender_dst`
    /// (the recent part starts empty), the old index is gone, deleting a message takes
    /// its key out, and a message's sender or recipient cannot be changed.
    #[test]
    fn the_sender_dst_step_copies_every_key_and_keeps_them_true() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = file_at(&dir, 12, &["13800000001", "13800000002"]);
        for (sender, cmd, dst) in [(1, 10, 2), (2, 10, 1), (1, 10, 2), (1, 11, 7), (2, 10, 2)] {
            conn.execute(
                "INSERT INTO messages (sender_id, cmd, dst_id, created_at) VALUES (?1, ?2, ?3, 1)",
                [sender, cmd, dst],
            )
            .expect("message");
        }
        assert_eq!(migrate(&mut conn).expect("migrate"), 1);
        let keys = |conn: &Connection, table: &str| -> Vec<(i64, i64, i64, i64)> {
            conn.prepare(&format!("SELECT sender_id, cmd, dst_id, id FROM {table}"))
                .expect("prepare")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .expect("query")
                .collect::<rusqlite::Result<_>>()
                .expect("rows")
        };
        assert_eq!(
            keys(&conn, "sender_dst"),
            [
                (1, 10, 2, 1),
                (1, 10, 2, 3),
                (1, 11, 7, 4),
                (2, 10, 1, 2),
                (2, 10, 2, 5)
            ]
        );
        assert!(keys(&conn, "sender_dst_recent").is_empty());
        let old_index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'messages_by_sender_dst'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(old_index, 0);
        // A key in the recent part goes with its message too.
        conn.execute("INSERT INTO sender_dst_recent VALUES (2, 10, 1, 6)", [])
            .expect("key");
        conn.execute(
            "INSERT INTO messages (id, sender_id, cmd, dst_id, created_at) VALUES (6, 2, 10, 1, 1)",
            [],
        )
        .expect("message");
        conn.execute("DELETE FROM messages WHERE id IN (3, 6)", [])
            .expect("delete");
        assert_eq!(
            keys(&conn, "sender_dst"),
            [(1, 10, 2, 1), (1, 11, 7, 4), (2, 10, 1, 2), (2, 10, 2, 5)]
        );
        assert!(keys(&conn, "sender_dst_recent").is_empty());
        let err = conn
            .execute("UPDATE messages SET dst_id = 1 WHERE id = 1", [])
            .expect_err("a recipient changed");
        assert!(
            err.to_string()
                .contains("keeps its id, sender and recipient"),
            "{err}"
        );
        conn.execute("UPDATE messages SET content = 'edited' WHERE id = 1", [])
            .expect("content may change");
        assert_intact(&conn);
    }
}

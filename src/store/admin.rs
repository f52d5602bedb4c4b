//! Administration: what `fastim admin`, `backup`, `restore` and `check` need.
//!
//! These run in a separate process while the server may be running on the same file. WAL
//! lets both work; every write here is one short `BEGIN IMMEDIATE` transaction, so the
//! server's writer waits at most milliseconds (within [`super::BUSY_TIMEOUT`]).
//!
//! The server keeps in memory only what it can re-check in the database: a write here
//! takes effect for it at once through the checks it already makes. A revoked session is
//! refused at the next API call or `/chat` upgrade; a message from a blocked or deleted
//! user, or to a deleted group or account, is refused by
//! [`Db::save_messages_checked`]'s checks inside its transaction. The sockets a server
//! holds open are told of in the same transaction: a block, a deletion, a password
//! change and ended sessions write a row to `revocations` (`revocations.rs`), which the
//! server polls to close those sockets.
//!
//! # Deleting a user
//!
//! [`Db::delete_user`] removes the account, its sessions, friendships and memberships,
//! and the messages it is part of: everything it sent (one-to-one and group) and every
//! one-to-one message sent to it. Why not keep them: `messages.sender_id` references the
//! user (no cascade), so keeping them would need a placeholder account; their one-to-one
//! partners can no longer open that conversation (history needs a friendship, which is
//! gone); and deleting an account is what a person asks for to have their words removed.
//! History stays consistent for the others: message ids are never reused
//! (`AUTOINCREMENT`), so every client's `after_id` cursor and every member's join point
//! keep their meaning; the user's groups are left as [`Db::leave_group`] leaves them
//! (ownership passes to the longest-standing member, or an emptied group is deleted).

use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;

use super::groups::{GROUP_COLUMNS, Group, LeaveOutcome, group_from_row, leave_in};
use super::revocations::{Reason, record};
use super::users::{USER_COLUMNS, User, user_exists, user_from_row};
use super::{Db, Result, StoreError, schema};

/// A user with what an administrator wants to see about them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// Whether the user is blocked from logging in and sending.
    pub blocked: bool,
    /// Number of friends.
    pub friends: i64,
    /// Number of groups they are a member of.
    pub groups: i64,
    /// Sessions that have not expired.
    pub sessions: i64,
    /// Messages they sent (one-to-one and group).
    pub messages_sent: i64,
}

/// A group with its member and message counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// The group.
    #[serde(flatten)]
    pub group: Group,
    /// Number of members, the owner included.
    pub members: i64,
    /// Number of messages sent to it.
    pub messages: i64,
}

/// What [`Db::delete_user`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeletedUser {
    /// Sessions ended.
    pub sessions: usize,
    /// Friendships ended.
    pub friendships: usize,
    /// Groups left.
    pub memberships: usize,
    /// `(group, new owner)` of each group they owned that passed to another member.
    pub groups_transferred: Vec<(i64, i64)>,
    /// Groups they owned and were the last member of, now deleted.
    pub groups_deleted: Vec<i64>,
    /// Messages deleted (what they sent, and one-to-one messages to them).
    pub messages: usize,
}

/// A session as an administrator sees it: never its token, nor the whole digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The first 8 bytes of the token's SHA-256, as 16 hexadecimal digits: what
    /// `admin session revoke --session` takes.
    pub id: String,
    /// When it expires, unix ms.
    pub expires_at: i64,
}

/// The name [`SessionInfo::id`] of the session whose token has this digest.
pub fn session_name(token_digest: &[u8; 32]) -> String {
    token_digest[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_session_name(id: &str) -> Option<[u8; 8]> {
    let id = id.trim();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 8];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Counts over the whole database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Users.
    pub users: i64,
    /// Users that are blocked.
    pub blocked_users: i64,
    /// Groups.
    pub groups: i64,
    /// Messages (one-to-one and group).
    pub messages: i64,
    /// Sessions that have not expired.
    pub sessions: i64,
    /// Bytes of the main database file as SQLite sees it (pages × page size), without
    /// the write-ahead log.
    pub database_bytes: i64,
    /// The schema version of the file.
    pub schema_version: i64,
}

/// The answer of [`check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// `PRAGMA user_version` of the file.
    pub schema_version: i64,
    /// The newest version this build knows.
    pub known_version: i64,
    /// What `PRAGMA integrity_check` said: `["ok"]` for a healthy file; or, when SQLite
    /// found none, what is wrong with the conversation index (schema step 13).
    pub integrity: Vec<String>,
}

impl CheckReport {
    /// Whether the file is healthy and of a schema version this build can use.
    pub fn ok(&self) -> bool {
        self.integrity == ["ok"] && (1..=self.known_version).contains(&self.schema_version)
    }
}

/// Opens an existing file without creating it, and without migrating.
fn open_raw(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::default().difference(OpenFlags::SQLITE_OPEN_CREATE),
    )?;
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    Ok(conn)
}

/// `PRAGMA integrity_check` and the schema version of the file at `path`, which must
/// exist. Reads only; safe while the server runs (it reads one snapshot).
///
/// # Errors
/// [`StoreError::Sqlite`] if the file cannot be opened or is not a database at all.
pub fn check(path: &Path) -> Result<CheckReport> {
    let conn = open_raw(path)?;
    let schema_version = schema::user_version(&conn)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let mut integrity = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // The conversation index the store keeps itself (schema step 13), if SQLite found
    // the file sound.
    if integrity == ["ok"] && schema_version >= 13 {
        let faults = super::messages::index_faults(&conn)?;
        if !faults.is_empty() {
            integrity = faults;
        }
    }
    Ok(CheckReport {
        schema_version,
        known_version: schema::LATEST,
        integrity,
    })
}

/// Whether another connection (a running server) has the database at `path` open.
///
/// Every connection to a WAL database holds a shared lock on it while open; this asks
/// for an exclusive one without waiting, and gives it back at once.
///
/// # Errors
/// [`StoreError::Sqlite`] if the file cannot be opened.
pub fn in_use(path: &Path) -> Result<bool> {
    let conn = open_raw(path)?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    match conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;") {
        Ok(()) => Ok(false),
        Err(e)
            if super::sqlite_code(&e)
                .is_some_and(|c| c.code == rusqlite::ErrorCode::DatabaseBusy) =>
        {
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Folds the write-ahead log of the database at `path` into the main file and truncates
/// it, so that the main file alone holds every commit (before it is moved aside).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn checkpoint(path: &Path) -> Result<()> {
    let conn = open_raw(path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

impl Db {
    /// Opens the database at `path` like [`Db::open`], but fails instead of creating a
    /// missing file (an administrator who mistyped `--data-dir` gets an error, not a new
    /// empty database).
    ///
    /// # Errors
    /// As [`Db::open`]; [`StoreError::Sqlite`] if the file does not exist.
    pub fn open_existing(path: &Path) -> Result<Db> {
        // Fails on a missing file; the connection is then opened as the server does.
        drop(open_raw(path)?);
        Db::open(path)
    }

    /// Every user with counts, by id.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn list_users(&self, now: i64) -> Result<Vec<UserInfo>> {
        self.user_infos(None, now)
    }

    /// One user with counts.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn user_info(&self, id: i64, now: i64) -> Result<Option<UserInfo>> {
        Ok(self.user_infos(Some(id), now)?.pop())
    }

    fn user_infos(&self, id: Option<i64>, now: i64) -> Result<Vec<UserInfo>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, u.blocked,
                 (SELECT count(*) FROM friends f WHERE f.user_id = u.id),
                 (SELECT count(*) FROM group_members g WHERE g.user_id = u.id),
                 (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.expires_at > ?2),
                 (SELECT count(*) FROM sender_dst s WHERE s.sender_id = u.id)
                 + (SELECT count(*) FROM sender_dst_recent s WHERE s.sender_id = u.id)
             FROM users u
             WHERE ?1 IS NULL OR u.id = ?1
             ORDER BY u.id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![id, now], |row| {
            Ok(UserInfo {
                user: user_from_row(row)?,
                blocked: row.get(7)?,
                friends: row.get(8)?,
                groups: row.get(9)?,
                sessions: row.get(10)?,
                messages_sent: row.get(11)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sets a new password hash and ends every session of the user (whoever knew the old
    /// password logs in again). Returns how many sessions ended.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`].
    pub fn set_password(&mut self, id: i64, password_hash: &str) -> Result<usize> {
        let tx = self.write_tx()?;
        let n = tx.execute(
            "UPDATE users SET password_hash = ?2 WHERE id = ?1",
            params![id, password_hash],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchUser);
        }
        let revoked = tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        record(&tx, Some(id), None, Reason::PasswordChanged)?;
        tx.commit()?;
        Ok(revoked)
    }

    /// Blocks or unblocks a user. Blocking ends every session of theirs in the same
    /// transaction; a blocked user cannot log in (the API answers "this account is
    /// blocked") and what they send is refused. Returns how many sessions ended.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`].
    pub fn set_blocked(&mut self, id: i64, blocked: bool) -> Result<usize> {
        let tx = self.write_tx()?;
        let n = tx.execute(
            "UPDATE users SET blocked = ?2 WHERE id = ?1",
            params![id, blocked],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchUser);
        }
        let revoked = if blocked {
            record(&tx, Some(id), None, Reason::Blocked)?;
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?
        } else {
            0
        };
        tx.commit()?;
        Ok(revoked)
    }

    /// Ends every session of `user`; returns how many.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`].
    pub fn revoke_sessions(&mut self, user: i64) -> Result<usize> {
        let tx = self.write_tx()?;
        if !user_exists(&tx, user)? {
            return Err(StoreError::NoSuchUser);
        }
        let n = tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user])?;
        record(&tx, Some(user), None, Reason::Revoked)?;
        tx.commit()?;
        Ok(n)
    }

    /// Ends every session of every user; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn revoke_all_sessions(&mut self) -> Result<usize> {
        let tx = self.write_tx()?;
        let n = tx.execute("DELETE FROM sessions", [])?;
        record(&tx, None, None, Reason::Revoked)?;
        tx.commit()?;
        Ok(n)
    }

    /// The sessions of `user` that have not expired at `now`, newest expiry first.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`].
    pub fn sessions_of(&self, user: i64, now: i64) -> Result<Vec<SessionInfo>> {
        if !user_exists(&self.conn, user)? {
            return Err(StoreError::NoSuchUser);
        }
        let mut stmt = self.conn.prepare(
            "SELECT token_digest, expires_at FROM sessions
             WHERE user_id = ?1 AND expires_at > ?2 ORDER BY expires_at DESC, token_digest",
        )?;
        let rows = stmt.query_map(params![user, now], |row| {
            let digest: [u8; 32] = row.get(0)?;
            Ok(SessionInfo {
                id: session_name(&digest),
                expires_at: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Ends the one session of `user` named `id` (its [`SessionInfo::id`]); the user's
    /// other sessions stay. Returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`]. An `id` that is not 16 hexadecimal digits names no
    /// session (`Ok(false)`).
    pub fn revoke_session(&mut self, user: i64, id: &str) -> Result<bool> {
        let tx = self.write_tx()?;
        if !user_exists(&tx, user)? {
            return Err(StoreError::NoSuchUser);
        }
        let Some(prefix) = parse_session_name(id) else {
            return Ok(false);
        };
        let mut low = [0u8; 32];
        low[..8].copy_from_slice(&prefix);
        let mut high = [0xffu8; 32];
        high[..8].copy_from_slice(&prefix);
        let digests: Vec<[u8; 32]> = tx
            .prepare(
                "SELECT token_digest FROM sessions
                 WHERE token_digest BETWEEN ?1 AND ?2 AND user_id = ?3",
            )?
            .query_map(params![low, high, user], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for digest in &digests {
            tx.execute("DELETE FROM sessions WHERE token_digest = ?1", [digest])?;
            record(&tx, Some(user), Some(*digest), Reason::Revoked)?;
        }
        tx.commit()?;
        Ok(!digests.is_empty())
    }

    /// Deletes a user and what belongs to them, in one transaction (see the module
    /// documentation for what happens to their messages, and why).
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`].
    pub fn delete_user(&mut self, id: i64) -> Result<DeletedUser> {
        let tx = self.write_tx()?;
        if !user_exists(&tx, id)? {
            return Err(StoreError::NoSuchUser);
        }
        let mut done = DeletedUser::default();
        let groups: Vec<i64> = tx
            .prepare("SELECT group_id FROM group_members WHERE user_id = ?1 ORDER BY group_id")?
            .query_map([id], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for group in groups {
            match leave_in(&tx, id, group)? {
                LeaveOutcome::Left => {}
                LeaveOutcome::OwnershipTransferred { new_owner } => {
                    done.groups_transferred.push((group, new_owner));
                }
                LeaveOutcome::GroupDeleted => done.groups_deleted.push(group),
            }
            done.memberships += 1;
        }
        // What they sent (their range of the conversation index, both parts), and what
        // was sent to them: one range per person who wrote to them (`chat_peers`, whose
        // rows go with the user). SQLite collects the ids before it deletes (and the
        // trigger takes their keys out of the index).
        done.messages = tx.execute(
            "DELETE FROM messages WHERE id IN (
                 SELECT id FROM sender_dst WHERE sender_id = ?1
                 UNION ALL
                 SELECT id FROM sender_dst_recent WHERE sender_id = ?1)",
            [id],
        )?;
        done.messages += tx.execute(
            "DELETE FROM messages WHERE id IN (
                 SELECT s.id FROM chat_peers cp CROSS JOIN sender_dst s
                     ON s.sender_id = cp.peer_id AND s.cmd = 10 AND s.dst_id = ?1
                 WHERE cp.user_id = ?1
                 UNION ALL
                 SELECT s.id FROM chat_peers cp CROSS JOIN sender_dst_recent s
                     ON s.sender_id = cp.peer_id AND s.cmd = 10 AND s.dst_id = ?1
                 WHERE cp.user_id = ?1)",
            [id],
        )?;
        // Their own markers cascade; their partners' markers of the conversation go too.
        tx.execute(
            "DELETE FROM read_markers WHERE cmd = 10 AND dst_id = ?1",
            [id],
        )?;
        done.sessions = tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        done.friendships = tx.execute(
            "DELETE FROM friends WHERE user_id = ?1 OR friend_id = ?1",
            [id],
        )? / 2;
        // These cascade too; said here so that nothing of the user is left to chance.
        tx.execute(
            "DELETE FROM friend_requests WHERE from_id = ?1 OR to_id = ?1",
            [id],
        )?;
        tx.execute(
            "DELETE FROM blocks WHERE blocker_id = ?1 OR blocked_id = ?1",
            [id],
        )?;
        tx.execute("DELETE FROM users WHERE id = ?1", [id])?;
        record(&tx, Some(id), None, Reason::Deleted)?;
        tx.commit()?;
        Ok(done)
    }

    /// Every group with counts, by id.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        self.group_infos(None)
    }

    /// One group with counts.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn group_info(&self, id: i64) -> Result<Option<GroupInfo>> {
        Ok(self.group_infos(Some(id))?.pop())
    }

    fn group_infos(&self, id: Option<i64>) -> Result<Vec<GroupInfo>> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS},
                 (SELECT count(*) FROM group_members m WHERE m.group_id = g.id),
                 (SELECT count(*) FROM messages x WHERE x.cmd = 11 AND x.dst_id = g.id)
             FROM chat_groups g
             WHERE ?1 IS NULL OR g.id = ?1
             ORDER BY g.id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([id], |row| {
            Ok(GroupInfo {
                group: group_from_row(row)?,
                members: row.get(7)?,
                messages: row.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes a group, its memberships and its messages; returns how many messages.
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`].
    pub fn delete_group(&mut self, id: i64) -> Result<usize> {
        let tx = self.write_tx()?;
        let messages = tx.execute("DELETE FROM messages WHERE cmd = 11 AND dst_id = ?1", [id])?;
        tx.execute(
            "DELETE FROM read_markers WHERE cmd = 11 AND dst_id = ?1",
            [id],
        )?;
        // Cascades to the memberships.
        if tx.execute("DELETE FROM chat_groups WHERE id = ?1", [id])? == 0 {
            return Err(StoreError::NoSuchGroup);
        }
        tx.commit()?;
        Ok(messages)
    }

    /// Counts over the whole database, read in one snapshot.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn stats(&mut self, now: i64) -> Result<Stats> {
        let tx = self.conn.transaction()?;
        let count = |sql: &str| -> rusqlite::Result<i64> { tx.query_row(sql, [], |r| r.get(0)) };
        let stats = Stats {
            users: count("SELECT count(*) FROM users")?,
            blocked_users: count("SELECT count(*) FROM users WHERE blocked")?,
            groups: count("SELECT count(*) FROM chat_groups")?,
            messages: count("SELECT count(*) FROM messages")?,
            sessions: tx.query_row(
                "SELECT count(*) FROM sessions WHERE expires_at > ?1",
                [now],
                |r| r.get(0),
            )?,
            database_bytes: count(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            )?,
            schema_version: schema::user_version(&tx)?,
        };
        tx.commit()?;
        Ok(stats)
    }

    /// Writes a consistent copy of the whole database to `dest` (which must not be the
    /// live file), with SQLite's online backup API.
    ///
    /// The copy is made in one step under one read transaction: it is the database as of
    /// one commit, and in WAL mode the server's writer goes on meanwhile. The copy is
    /// written to a temporary file beside `dest`, fsynced, and renamed over `dest`, so
    /// `dest` is either the old file or the whole new copy.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] if SQLite fails; I/O errors of the rename come as
    /// [`StoreError::Io`].
    pub fn backup_to(&self, dest: &Path) -> Result<()> {
        let tmp = sibling(dest, ".tmp");
        let _ = std::fs::remove_file(&tmp);
        let result = (|| -> Result<()> {
            let mut out = Connection::open(&tmp)?;
            {
                let backup = Backup::new(&self.conn, &mut out)?;
                // A writer holding a lock makes a step answer Busy: wait and retry, bounded.
                let mut tries = 0;
                loop {
                    match backup.step(-1)? {
                        StepResult::Done => break,
                        StepResult::More | StepResult::Busy | StepResult::Locked if tries < 500 => {
                            tries += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        _ => {
                            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                                Some("the database stayed busy for 5 s".to_owned()),
                            )));
                        }
                    }
                }
            }
            // The copy keeps the WAL flag of its source: fold any log it made back in.
            out.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            drop(out);
            sync_file(&tmp)?;
            std::fs::rename(&tmp, dest)?;
            sync_parent(dest)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Makes a rename in the directory of `path` durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

/// Puts the backup `from` in place of the database `target`, which no process may have
/// open (the caller checks with [`in_use`] unless told to force it).
///
/// `from` is checked first ([`check`]: healthy, and a schema version this build knows);
/// then copied beside `target`, fsynced, and renamed over it, so `target` is at every
/// moment either the old database or the whole backup. The old database, its log folded
/// in, stays as `target.pre-restore` (a hard link: no copy). The old `-wal` and `-shm`
/// files are removed before the rename: a stale log must never be applied to the
/// restored file. Returns whether an old database was kept.
///
/// # Errors
/// [`StoreError::Restore`] if the backup is not sound; [`StoreError::Sqlite`] or
/// [`StoreError::Io`] otherwise.
pub fn restore(from: &Path, target: &Path) -> Result<bool> {
    let report = check(from)?;
    if !report.ok() {
        return Err(StoreError::Restore(format!(
            "{} is not a sound fastim backup (schema version {}, integrity: {})",
            from.display(),
            report.schema_version,
            report.integrity.join("; ")
        )));
    }
    let tmp = sibling(target, ".restore-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::copy(from, &tmp)?;
    sync_file(&tmp)?;
    let kept = if target.exists() {
        checkpoint(target)?;
        let old = sibling(target, ".pre-restore");
        let _ = std::fs::remove_file(&old);
        std::fs::hard_link(target, &old)?;
        true
    } else {
        false
    };
    for suffix in ["-wal", "-shm"] {
        match std::fs::remove_file(sibling(target, suffix)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    std::fs::rename(&tmp, target)?;
    sync_parent(target)?;
    Ok(kept)
}

/// The user with this id or mobile number: an argument that parses as a mobile number
/// (5 or more digits, or a leading `+`) is looked up as one first, anything else as an
/// id.
///
/// # Errors
/// [`StoreError::Sqlite`] only.
pub fn find_user(db: &Db, id_or_mobile: &str) -> Result<Option<User>> {
    let key = id_or_mobile.trim();
    if let Some(user) = db.user_by_mobile(key)? {
        return Ok(Some(user));
    }
    match key.parse::<i64>() {
        Ok(id) => db.user_by_id(id),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{NewGroup, Peer};
    use super::*;

    fn group(db: &mut Db, owner: i64, name: &str) -> Group {
        db.create_group(
            owner,
            NewGroup {
                name: name.to_owned(),
                ..NewGroup::default()
            },
            5,
            1,
        )
        .expect("group")
    }

    #[test]
    fn list_and_show_users_with_counts() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let b = user(&mut t.db, "13800000002", 2);
        t.db.add_friend(a.id, b.id, 3).expect("friends");
        t.db.create_session(a.id, [1; 32], 100).expect("live");
        t.db.create_session(a.id, [2; 32], 10)
            .expect("expired at 50");
        let g = group(&mut t.db, a.id, "g");
        t.db.save_messages(
            &[
                text(a.id, Peer::User(b.id), "hi"),
                text(a.id, Peer::Group(g.id), "all"),
            ],
            4,
        )
        .expect("save");
        let list = t.db.list_users(50).expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].user, a);
        assert_eq!(
            (
                list[0].friends,
                list[0].groups,
                list[0].sessions,
                list[0].messages_sent
            ),
            (1, 1, 1, 2)
        );
        assert!(!list[0].blocked);
        assert_eq!(
            t.db.user_info(b.id, 50).expect("show"),
            Some(list[1].clone())
        );
        assert_eq!(t.db.user_info(999, 50).expect("show"), None);
        assert_eq!(find_user(&t.db, "13800000002").expect("q"), Some(b.clone()));
        assert_eq!(find_user(&t.db, &b.id.to_string()).expect("q"), Some(b));
        assert_eq!(find_user(&t.db, "nobody").expect("q"), None);
    }

    #[test]
    fn block_ends_sessions_refuses_sending_and_unblock_restores() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let b = user(&mut t.db, "13800000002", 1);
        t.db.add_friend(a.id, b.id, 1).expect("friends");
        t.db.create_session(a.id, [1; 32], 100).expect("session");
        assert_eq!(t.db.set_blocked(a.id, true).expect("block"), 1);
        assert_eq!(t.db.session_user([1; 32], 0).expect("q"), None);
        assert!(
            t.db.user_login_row(&a.mobile)
                .expect("q")
                .expect("row")
                .blocked
        );
        let r =
            t.db.save_messages_checked(
                &[
                    text(a.id, Peer::User(b.id), "x"),
                    text(b.id, Peer::User(a.id), "y"),
                ],
                2,
            )
            .expect("save");
        assert_eq!(r[0], Err(super::super::SendRight::Blocked));
        assert!(r[1].is_ok(), "others may still write to them");
        assert_eq!(t.db.set_blocked(a.id, false).expect("unblock"), 0);
        assert!(
            !t.db
                .user_login_row(&a.mobile)
                .expect("q")
                .expect("row")
                .blocked
        );
        let r =
            t.db.save_messages_checked(&[text(a.id, Peer::User(b.id), "x")], 3)
                .expect("save");
        assert!(r[0].is_ok());
        assert!(matches!(
            t.db.set_blocked(999, true),
            Err(StoreError::NoSuchUser)
        ));
    }

    #[test]
    fn passwd_replaces_the_hash_and_ends_sessions() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        t.db.create_session(a.id, [1; 32], 100).expect("session");
        assert_eq!(t.db.set_password(a.id, "new-hash").expect("passwd"), 1);
        let row = t.db.user_login_row(&a.mobile).expect("q").expect("row");
        assert_eq!(row.password_hash, "new-hash");
        assert_eq!(t.db.session_user([1; 32], 0).expect("q"), None);
        assert!(matches!(
            t.db.set_password(999, "h"),
            Err(StoreError::NoSuchUser)
        ));
    }

    #[test]
    fn revoke_one_user_or_everyone() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let b = user(&mut t.db, "13800000002", 1);
        t.db.create_session(a.id, [1; 32], 100).expect("a1");
        t.db.create_session(a.id, [2; 32], 100).expect("a2");
        t.db.create_session(b.id, [3; 32], 100).expect("b");
        assert_eq!(t.db.revoke_sessions(a.id).expect("revoke"), 2);
        assert_eq!(t.db.session_user([3; 32], 0).expect("q"), Some(b.id));
        assert!(matches!(
            t.db.revoke_sessions(999),
            Err(StoreError::NoSuchUser)
        ));
        assert_eq!(t.db.revoke_all_sessions().expect("all"), 1);
        assert_eq!(t.db.session_user([3; 32], 0).expect("q"), None);
    }

    #[test]
    fn one_session_is_listed_by_name_and_revoked_alone() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let b = user(&mut t.db, "13800000002", 1);
        let mut phone = [0u8; 32];
        phone[0] = 0xab;
        let mut laptop = phone;
        laptop[31] = 1; // Same first 8 bytes as another user's session: never mixed up.
        let mut other = phone;
        other[7] = 0xcd;
        t.db.create_session(a.id, phone, 200).expect("phone");
        t.db.create_session(a.id, other, 100).expect("other");
        t.db.create_session(b.id, laptop, 100).expect("b's");
        t.db.create_session(a.id, [9; 32], 10)
            .expect("expired at 50");
        let listed = t.db.sessions_of(a.id, 50).expect("list");
        assert_eq!(
            listed,
            [
                SessionInfo {
                    id: "ab00000000000000".into(),
                    expires_at: 200
                },
                SessionInfo {
                    id: "ab000000000000cd".into(),
                    expires_at: 100
                },
            ]
        );
        let cursor = t.db.revocation_cursor().expect("cursor");
        assert!(
            t.db.revoke_session(a.id, "AB00000000000000")
                .expect("revoke")
        );
        assert_eq!(t.db.session_user(phone, 0).expect("q"), None);
        assert_eq!(t.db.session_user(other, 0).expect("q"), Some(a.id));
        assert_eq!(t.db.session_user(laptop, 0).expect("q"), Some(b.id));
        assert_eq!(
            t.db.revocations_after(cursor, 10).expect("rows"),
            [super::super::Revocation {
                seq: cursor + 1,
                user: Some(a.id),
                session: Some(phone),
                reason: Reason::Revoked,
            }]
        );
        assert!(!t.db.revoke_session(a.id, "ab00000000000000").expect("gone"));
        for bad in [
            "",
            "ab",
            "+b00000000000000",
            "zz00000000000000",
            "ab000000000000cd00",
        ] {
            assert!(!t.db.revoke_session(a.id, bad).expect(bad), "{bad}");
        }
        assert_eq!(t.db.revocation_cursor().expect("cursor"), cursor + 1);
        assert!(matches!(
            t.db.revoke_session(999, "ab000000000000cd"),
            Err(StoreError::NoSuchUser)
        ));
        assert!(matches!(
            t.db.sessions_of(999, 0),
            Err(StoreError::NoSuchUser)
        ));
    }

    #[test]
    fn every_change_that_ends_sockets_records_a_revocation_with_it() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let b = user(&mut t.db, "13800000002", 1);
        let start = t.db.revocation_cursor().expect("cursor");
        t.db.set_blocked(a.id, true).expect("block");
        t.db.set_blocked(a.id, false)
            .expect("unblock records nothing");
        t.db.set_password(a.id, "h").expect("passwd");
        t.db.revoke_sessions(b.id).expect("revoke b");
        t.db.revoke_all_sessions().expect("revoke all");
        t.db.delete_user(b.id).expect("delete b");
        // A refused change records nothing.
        assert!(t.db.set_blocked(999, true).is_err());
        assert!(t.db.delete_user(999).is_err());
        let rows: Vec<_> =
            t.db.revocations_after(start, 100)
                .expect("rows")
                .into_iter()
                .map(|r| (r.user, r.session, r.reason))
                .collect();
        assert_eq!(
            rows,
            [
                (Some(a.id), None, Reason::Blocked),
                (Some(a.id), None, Reason::PasswordChanged),
                (Some(b.id), None, Reason::Revoked),
                (None, None, Reason::Revoked),
                (Some(b.id), None, Reason::Deleted),
            ]
        );
    }

    #[test]
    fn delete_user_removes_their_traces_and_keeps_the_others_consistent() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let b = user(&mut t.db, "13800000002", 1);
        let c = user(&mut t.db, "13800000003", 1);
        t.db.add_friend(a.id, b.id, 1).expect("ab");
        t.db.add_friend(b.id, c.id, 1).expect("bc");
        t.db.create_session(a.id, [1; 32], 100).expect("session");
        let owned = group(&mut t.db, a.id, "owned");
        t.db.join_group(c.id, owned.id, 2).expect("c joins");
        let alone = group(&mut t.db, a.id, "alone");
        let others = group(&mut t.db, b.id, "others");
        t.db.join_group(a.id, others.id, 2).expect("a joins");
        let saved =
            t.db.save_messages(
                &[
                    text(a.id, Peer::User(b.id), "a to b"),
                    text(b.id, Peer::User(a.id), "b to a"),
                    text(b.id, Peer::User(c.id), "b to c"),
                    text(a.id, Peer::Group(others.id), "a in others"),
                    text(b.id, Peer::Group(others.id), "b in others"),
                ],
                3,
            )
            .expect("save");
        let done = t.db.delete_user(a.id).expect("delete");
        assert_eq!(done.sessions, 1);
        assert_eq!(done.friendships, 1);
        assert_eq!(done.memberships, 3);
        assert_eq!(done.groups_transferred, [(owned.id, c.id)]);
        assert_eq!(done.groups_deleted, [alone.id]);
        assert_eq!(done.messages, 3);
        assert_eq!(assert_indexed(&t.db), (0, 2));
        assert_eq!(t.db.user_by_id(a.id).expect("q"), None);
        assert_eq!(t.db.friends(b.id).expect("q"), std::slice::from_ref(&c));
        assert_eq!(
            t.db.group_by_id(owned.id)
                .expect("q")
                .expect("kept")
                .owner_id,
            c.id
        );
        assert_eq!(t.db.group_by_id(alone.id).expect("q"), None);
        // b still gets what b is owed, in id order, from the same cursor.
        let left: Vec<String> =
            t.db.messages_for(b.id, 0, 100)
                .expect("sync")
                .into_iter()
                .map(|m| m.content)
                .collect();
        assert_eq!(left, ["b to c", "b in others"]);
        let stats = t.db.stats(0).expect("stats");
        assert_eq!((stats.users, stats.messages, stats.groups), (2, 2, 2));
        // A new message still gets a larger id than any before.
        let next =
            t.db.save_messages(&[text(b.id, Peer::User(c.id), "later")], 4)
                .expect("save");
        assert!(next[0].id > saved[4].id);
        assert!(matches!(
            t.db.delete_user(a.id),
            Err(StoreError::NoSuchUser)
        ));
    }

    #[test]
    fn list_show_and_delete_groups() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let b = user(&mut t.db, "13800000002", 1);
        let g = group(&mut t.db, a.id, "g");
        t.db.join_group(b.id, g.id, 2).expect("join");
        t.db.save_messages(&[text(a.id, Peer::Group(g.id), "hi")], 3)
            .expect("save");
        let list = t.db.list_groups().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].members, list[0].messages), (2, 1));
        assert_eq!(list[0].group, g);
        assert_eq!(t.db.group_info(g.id).expect("show"), Some(list[0].clone()));
        assert_eq!(t.db.delete_group(g.id).expect("delete"), 1);
        assert_eq!(assert_indexed(&t.db), (0, 0));
        assert_eq!(t.db.group_info(g.id).expect("show"), None);
        assert!(t.db.groups_of(b.id).expect("q").is_empty());
        assert!(matches!(
            t.db.delete_group(g.id),
            Err(StoreError::NoSuchGroup)
        ));
        let r =
            t.db.save_messages_checked(&[text(b.id, Peer::Group(g.id), "x")], 4)
                .expect("save");
        assert_eq!(r[0], Err(super::super::SendRight::NoSuchGroup));
    }

    #[test]
    fn stats_count_everything() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let b = user(&mut t.db, "13800000002", 1);
        t.db.create_session(a.id, [1; 32], 100).expect("session");
        t.db.create_session(b.id, [2; 32], 10).expect("expired");
        t.db.set_blocked(b.id, true).expect("block");
        group(&mut t.db, a.id, "g");
        t.db.save_messages(&[text(a.id, Peer::User(a.id), "note")], 2)
            .expect("save");
        let s = t.db.stats(50).expect("stats");
        assert_eq!(
            (s.users, s.blocked_users, s.groups, s.messages, s.sessions),
            (2, 1, 1, 1, 1)
        );
        assert!(s.database_bytes >= 4096, "{}", s.database_bytes);
        assert_eq!(s.schema_version, schema::LATEST);
    }

    #[test]
    fn backup_is_a_sound_copy_taken_while_another_connection_writes() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let path = t.path();
        let writer = std::thread::spawn(move || {
            let mut db = Db::open(&path).expect("writer");
            for i in 0..200 {
                db.save_messages(&[text(a.id, Peer::User(a.id), &format!("m{i}"))], 2)
                    .expect("save");
            }
        });
        let dest = t.dir.path().join("copy.db");
        for _ in 0..5 {
            t.db.backup_to(&dest).expect("backup");
        }
        writer.join().expect("writer");
        t.db.backup_to(&dest).expect("final backup");
        let report = check(&dest).expect("check");
        assert!(report.ok(), "{report:?}");
        let mut copy = Db::open_existing(&dest).expect("open copy");
        assert_eq!(copy.stats(0).expect("stats").messages, 200);
        assert!(!t.dir.path().join("copy.db.tmp").exists());
    }

    /// A file SQLite finds sound but whose conversation index lost a key, or names a
    /// message that is gone: `check` says what is wrong, and the report is not ok.
    #[test]
    fn check_finds_a_conversation_index_out_of_step() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let b = user(&mut t.db, "13800000002", 1);
        let saved =
            t.db.save_messages(
                &[
                    text(a.id, Peer::User(b.id), "one"),
                    text(a.id, Peer::User(b.id), "two"),
                ],
                2,
            )
            .expect("save");
        assert_eq!(check(&t.path()).expect("check").integrity, ["ok"]);
        t.db.conn
            .execute("DELETE FROM sender_dst_recent WHERE id = ?1", [saved[0].id])
            .expect("lose a key");
        t.db.conn
            .execute(
                "INSERT INTO sender_dst VALUES (?1, 10, ?2, 999)",
                [a.id, b.id],
            )
            .expect("a stray key");
        let report = check(&t.path()).expect("check");
        assert_eq!(
            report.integrity,
            [
                "1 messages missing from the conversation index",
                "1 keys in sender_dst of messages that are not there"
            ]
        );
        assert!(!report.ok());
    }

    #[test]
    fn check_finds_a_corrupted_file() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 1);
        let batch: Vec<_> = (0..500)
            .map(|i| {
                text(
                    a.id,
                    Peer::User(a.id),
                    &format!("message number {i} {}", "x".repeat(100)),
                )
            })
            .collect();
        t.db.save_messages(&batch, 2).expect("save");
        let dest = t.dir.path().join("copy.db");
        t.db.backup_to(&dest).expect("backup");
        assert!(check(&dest).expect("check").ok());
        // Scribble over a whole page in the middle of the file (its header too, not only
        // the free space inside a page, whatever the schema's tables before it): some
        // b-tree page is no longer one.
        let mut bytes = std::fs::read(&dest).expect("read");
        let page = 4096;
        let mid = bytes.len() / 2 / page * page;
        for b in &mut bytes[mid..mid + page] {
            *b = 0x5a;
        }
        std::fs::write(&dest, &bytes).expect("write");
        match check(&dest) {
            Ok(report) => assert!(!report.ok(), "{report:?}"),
            Err(e) => assert!(e.to_string().contains("malformed"), "{e}"),
        }
    }

    #[test]
    fn in_use_sees_an_open_connection() {
        let t = test_db();
        let path = t.path();
        t.db.user_by_id(1).expect("a read takes the shared lock");
        assert!(in_use(&path).expect("probe"));
        drop(t.db);
        assert!(!in_use(&path).expect("probe"));
    }

    #[test]
    fn restore_puts_the_backup_in_place_and_keeps_the_old_file() {
        let mut t = test_db();
        user(&mut t.db, "13800000001", 1);
        let copy = t.dir.path().join("copy.db");
        t.db.backup_to(&copy).expect("backup");
        user(&mut t.db, "13800000002", 1);
        let path = t.path();
        drop(t.db);
        assert!(restore(&copy, &path).expect("restore"));
        let db = Db::open_existing(&path).expect("open");
        assert!(db.user_by_mobile("13800000002").expect("q").is_none());
        assert!(db.user_by_mobile("13800000001").expect("q").is_some());
        drop(db);
        let old = Db::open_existing(&t.dir.path().join("fastim.db.pre-restore")).expect("old");
        assert!(old.user_by_mobile("13800000002").expect("q").is_some());
        // Not a database: refused, the live file untouched.
        let junk = t.dir.path().join("junk");
        std::fs::write(&junk, b"not a database at all, just some bytes").expect("junk");
        assert!(restore(&junk, &path).is_err());
        assert!(check(&path).expect("check").ok());
    }

    #[test]
    fn open_existing_does_not_create() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing.db");
        assert!(Db::open_existing(&path).is_err());
        assert!(!path.exists());
    }
}

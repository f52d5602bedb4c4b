//! Persistence: users, sessions, contacts, groups and messages in one SQLite file.
//!
//! A [`Db`] owns one `rusqlite::Connection` and offers a synchronous API. It blocks on disk
//! I/O (every commit is fsynced), so it is used from worker threads, never from the event
//! loop. `Db` is `Send` but not `Sync`: one thread owns it; more threads open more `Db`s on
//! the same file (WAL mode lets readers run beside the one writer).
//!
//! The store never reads the clock: every time is a unix timestamp in milliseconds passed in
//! by the caller as `now`.
//!
//! What the store checks: what the data itself requires (unique mobile numbers and group
//! names, existing users and groups, memberships, the per-owner group limit). What it does
//! not check: who may do what (e.g. whether the sender of a message is a friend of its
//! recipient); that is the caller's job before it calls in.
//!
//! The tables, one file each: [`schema`] (migrations), `users`, `sessions`, `contacts`,
//! `groups`, `messages`, `reads` (read markers, the conversation list), `retention` (removing old messages), `revocations` (what the
//! administration commands tell a running server), `uploads` (pictures uploaded without a
//! session, removed unless an account takes them).

pub mod admin;
mod changes;
mod contacts;
mod group_admin;
mod groups;
mod messages;
mod reads;
mod requests;
mod retention;
mod revocations;
pub mod schema;
mod sessions;
mod uploads;
mod users;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

pub use changes::{Change, ChangeRefused, Changed, Edit, QUOTE_CHARS, Quote, Windows};
pub use group_admin::{GroupChanged, GroupUpdate, NOTICE, Notice, notice_sentence};
pub use groups::{Group, LeaveOutcome, Member, NewGroup, Role};
pub use messages::{Message, Peer, Saved, SendRight};
pub use reads::{Conversation, PREVIEW_CHARS, ReadMark, UNREAD_CAP, UNREAD_SCAN, preview};
pub use requests::{BlockOutcome, Dated, RequestOutcome, Requests};
pub use retention::RetentionBatch;
pub use revocations::{KEEP_REVOCATIONS, Reason, Revocation};
pub use uploads::SweepBatch;
pub use users::{LoginRow, NewUser, ProfileUpdate, User};

/// How long a statement waits for another connection's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed.
///
/// Every variant but [`StoreError::Sqlite`] and [`StoreError::SchemaTooNew`] is a domain
/// answer the caller can show to the user; those two (and `Io`, `Restore` of the
/// administration commands) are our own (or the disk's) fault.
#[derive(Debug)]
pub enum StoreError {
    /// A user with this mobile number already exists.
    MobileTaken,
    /// The user does not exist.
    NoSuchUser,
    /// A user cannot befriend themselves.
    SelfFriend,
    /// The two users are friends already.
    AlreadyFriends,
    /// A group with this exact name already exists.
    GroupNameTaken,
    /// The user already owns the maximum number of groups.
    TooManyGroups {
        /// The limit that was reached.
        max: usize,
    },
    /// The group does not exist.
    NoSuchGroup,
    /// The user is a member of the group already.
    AlreadyMember,
    /// The user is not a member of the group.
    NotMember,
    /// The two users are not friends.
    NotFriends,
    /// No such friend request waits.
    NoSuchRequest,
    /// One of the two users blocked the other.
    BlockedPair,
    /// The user has the maximum number of friend requests waiting.
    TooManyRequests {
        /// The limit that was reached.
        max: usize,
    },
    /// Only the group's owner may do this.
    NotOwner,
    /// The user named as the member to remove or make owner is not a member.
    NoSuchMember,
    /// The owner cannot remove themselves or transfer the group to themselves.
    OwnerItself,
    /// The database was written by a newer fastim: its schema version is unknown here.
    SchemaTooNew {
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// SQLite failed (I/O, corruption, lock timeout, or a bug in a query).
    Sqlite(rusqlite::Error),
    /// A file operation around the database failed (backup, restore).
    Io(std::io::Error),
    /// A file offered for restore is not a sound fastim database.
    Restore(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::MobileTaken => f.write_str("this mobile number is already registered"),
            StoreError::NoSuchUser => f.write_str("no such user"),
            StoreError::SelfFriend => f.write_str("you cannot add yourself as a friend"),
            StoreError::AlreadyFriends => f.write_str("you are already friends"),
            StoreError::GroupNameTaken => f.write_str("a group with this name already exists"),
            StoreError::TooManyGroups { max } => {
                write!(f, "a user can own at most {max} groups")
            }
            StoreError::NoSuchGroup => f.write_str("no such group"),
            StoreError::AlreadyMember => f.write_str("already a member of this group"),
            StoreError::NotMember => f.write_str("not a member of this group"),
            StoreError::NotFriends => f.write_str("you are not friends"),
            StoreError::NoSuchRequest => f.write_str("no such friend request"),
            StoreError::BlockedPair => f.write_str("you cannot send a friend request to this user"),
            StoreError::TooManyRequests { max } => write!(
                f,
                "you have {max} friend requests waiting for an answer; wait for some to be answered"
            ),
            StoreError::NotOwner => f.write_str("only the group's owner may do this"),
            StoreError::NoSuchMember => f.write_str("this user is not a member of the group"),
            StoreError::OwnerItself => f.write_str("the owner cannot do this to themselves"),
            StoreError::SchemaTooNew { found, known } => write!(
                f,
                "database schema version {found} is newer than this build knows ({known})"
            ),
            StoreError::Sqlite(e) => write!(f, "database error: {e}"),
            StoreError::Io(e) => write!(f, "file error: {e}"),
            StoreError::Restore(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sqlite(e) => Some(e),
            StoreError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// The SQLite error code of a failed statement, if it is one.
fn sqlite_code(e: &rusqlite::Error) -> Option<rusqlite::ffi::Error> {
    match e {
        rusqlite::Error::SqliteFailure(code, _) => Some(*code),
        _ => None,
    }
}

/// Whether `e` is a violation of a UNIQUE or PRIMARY KEY constraint.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    sqlite_code(e).is_some_and(|c| {
        c.code == ErrorCode::ConstraintViolation
            && matches!(
                c.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            )
    })
}

/// Whether `e` is a violation of a FOREIGN KEY constraint.
fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    sqlite_code(e).is_some_and(|c| c.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// `e` as `taken` if it broke a unique key or primary key (the name, number or pair
/// exists already), as itself otherwise: for `map_err`.
fn taken_or(taken: StoreError) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        if is_unique_violation(&e) {
            taken
        } else {
            e.into()
        }
    }
}

/// `e` as [`StoreError::NoSuchUser`] if it broke a foreign key (every foreign key these
/// inserts have names a user), as itself otherwise.
fn no_such_user(e: rusqlite::Error) -> StoreError {
    if is_foreign_key_violation(&e) {
        StoreError::NoSuchUser
    } else {
        e.into()
    }
}

/// A `LIMIT` value for SQLite from a caller's `usize` (saturating: SQLite takes `i64`).
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Page cache of one connection, in KiB, as `PRAGMA cache_size` takes it
/// (negative: a size, not a page count). SQLite's default is 2 MiB; the chat writer
/// re-reads the messages table's index pages from the OS on every commit with it.
const CACHE_KIB: i64 = -16 * 1024;

/// WAL pages after which a commit checkpoints (about 40 MiB of WAL).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

thread_local! {
    /// Pages in the WAL after the last commit on this thread of a connection that
    /// deferred its checkpoints ([`Db::defer_checkpoints`]); SQLite's WAL hook sets it.
    static WAL_PAGES: std::cell::Cell<std::os::raw::c_int> = const { std::cell::Cell::new(0) };
    /// Pages that last commit wrote to the WAL (see [`Db::take_commit_pages`]).
    static COMMIT_PAGES: std::cell::Cell<std::os::raw::c_int> = const { std::cell::Cell::new(0) };
}

/// A connection to the fastim database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens (creating if missing) the database at `path` and brings its schema up to date.
    ///
    /// Settings, per connection:
    /// - `journal_mode=WAL`: readers on other connections do not block the writer.
    /// - `synchronous=FULL`: a commit returns only after the WAL is fsynced, so a message
    ///   acknowledged to its sender survives a power cut (`NORMAL` could lose the last
    ///   commits in WAL mode).
    /// - `foreign_keys=ON`: SQLite's default is off.
    /// - busy timeout [`BUSY_TIMEOUT`]: wait for another connection's write lock.
    ///
    /// # Errors
    /// [`StoreError::SchemaTooNew`] if a newer fastim wrote the file; [`StoreError::Sqlite`]
    /// if it cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Db> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // journal_mode answers with the mode now in force: a file system without shared
        // memory support keeps "delete" (still durable, but readers then block the writer).
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!("{}: journal_mode is {mode}, not WAL", path.display());
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Statement journals (each insert of a batch may have to be undone alone)
        // and temporary tables in memory, not in a temporary file written page by
        // page: that file was most of a chat commit's system time.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", CACHE_KIB)?;
        // A checkpoint copies the newest version of every page in the WAL into the
        // database: the chat writer rewrites the same index pages in every commit,
        // so checkpointing every 1,000 pages (SQLite's default) copied each of them
        // again every few commits.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        let version = schema::user_version(&conn)?;
        if (1..schema::LATEST).contains(&version) {
            // A step may rebuild an index (step 10 reads the messages table once): on
            // a large file that takes a while, and an operator should know why.
            log::info!(
                "{}: upgrading the schema from version {version} to {}",
                path.display(),
                schema::LATEST
            );
        }
        let applied = schema::migrate(&mut conn)?;
        if applied > 0 && version > 0 {
            let steps = if applied == 1 { "step" } else { "steps" };
            log::info!("{}: schema upgraded ({applied} {steps})", path.display());
        }
        Ok(Db { conn })
    }

    /// For the chat writer: checkpoints no longer run inside the commit that crosses
    /// [`WAL_AUTOCHECKPOINT_PAGES`] (SQLite's automatic checkpoint, which holds that
    /// commit's acknowledgements back while it copies pages into the database and
    /// syncs it), but when the caller asks, with [`Db::checkpoint_if_due`], after it
    /// has handed the commit's results on. Call it on the thread that will commit.
    pub fn defer_checkpoints(&self) {
        WAL_PAGES.with(|p| p.set(0));
        self.conn.wal_hook(Some(|_wal, pages| {
            // Fewer pages than before the commit: the WAL started over with it.
            let before = WAL_PAGES.with(|p| p.replace(pages));
            COMMIT_PAGES.with(|c| {
                c.set(if pages > before {
                    pages - before
                } else {
                    pages
                })
            });
            Ok(())
        }));
    }

    /// After [`Db::defer_checkpoints`]: the 4 KiB pages the last commit on this thread
    /// wrote to the WAL (what a commit costs: SQLite logs every page it changed, whole),
    /// then 0 until the next commit (a transaction rolled back writes none). The first
    /// commit after a checkpoint that could not start the WAL over counts the WAL's
    /// pages before it too.
    pub fn take_commit_pages(&self) -> u64 {
        COMMIT_PAGES.with(|c| u64::try_from(c.replace(0)).unwrap_or(0))
    }

    /// After [`Db::defer_checkpoints`]: a passive checkpoint if the WAL has reached
    /// [`WAL_AUTOCHECKPOINT_PAGES`] since the last one (what SQLite's automatic
    /// checkpoint would have done inside the last commit). Returns whether it ran.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn checkpoint_if_due(&self) -> Result<bool> {
        self.checkpoint_if_over(WAL_AUTOCHECKPOINT_PAGES)
    }

    fn checkpoint_if_over(&self, pages: i64) -> Result<bool> {
        let due = WAL_PAGES.with(|p| i64::from(p.get()) >= pages);
        if due {
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            WAL_PAGES.with(|p| p.set(0));
        }
        Ok(due)
    }

    /// The schema version of the open file (`PRAGMA user_version`).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] if the pragma cannot be read.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(schema::user_version(&self.conn)?)
    }

    /// Proves the database can be written: takes the write lock (`BEGIN IMMEDIATE`)
    /// and lets it go without changing anything. For health checks.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the lock cannot be had (read-only file, disk or
    /// lock trouble, another writer holding it past the busy timeout).
    pub fn check_writable(&mut self) -> Result<()> {
        let tx = self.write_tx()?;
        tx.rollback()?;
        Ok(())
    }

    /// Starts a write transaction that takes the write lock at once (`BEGIN IMMEDIATE`).
    ///
    /// Every read-then-write in the store runs in one of these, so a check ("does the owner
    /// already have 5 groups?") and the write that depends on it cannot be split by another
    /// connection's commit.
    fn write_tx(&mut self) -> Result<rusqlite::Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the store's tests.

    use super::*;

    /// A database in a fresh temporary directory, removed when dropped.
    pub struct TestDb {
        /// The open connection.
        pub db: Db,
        /// Keeps the directory alive.
        pub dir: tempfile::TempDir,
    }

    impl TestDb {
        /// Path of the database file.
        pub fn path(&self) -> std::path::PathBuf {
            self.dir.path().join("fastim.db")
        }
    }

    /// Opens a new empty database.
    pub fn test_db() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("fastim.db")).expect("open");
        TestDb { db, dir }
    }

    /// A one-to-one or group text message with no client reference.
    pub fn text(from: i64, to: Peer, content: &str) -> Message {
        Message {
            content: content.to_owned(),
            ..Message::new(from, to)
        }
    }

    /// Checks the conversation index (schema step 13) as `fastim admin check` does:
    /// every message's key in exactly one of its two parts, no key of a message that is
    /// not there; returns how many keys each part holds (`sender_dst`, recent).
    pub fn assert_indexed(db: &Db) -> (i64, i64) {
        let faults = messages::index_faults(&db.conn).expect("index check");
        assert!(faults.is_empty(), "{faults:?}");
        let count = |sql: &str| -> i64 { db.conn.query_row(sql, [], |r| r.get(0)).expect("count") };
        (
            count("SELECT count(*) FROM sender_dst"),
            count("SELECT count(*) FROM sender_dst_recent"),
        )
    }

    /// Creates a user with mobile `mobile` (and a dummy password hash), at time `now`.
    pub fn user(db: &mut Db, mobile: &str, now: i64) -> User {
        db.create_user(
            NewUser {
                mobile: mobile.to_owned(),
                password_hash: format!("hash-of-{mobile}"),
                nickname: format!("nick-{mobile}"),
                avatar: String::new(),
                sex: "U".to_owned(),
                memo: String::new(),
            },
            now,
        )
        .expect("create user")
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    /// With checkpoints deferred, commits leave the WAL growing (no automatic
    /// checkpoint inside them) until the caller checkpoints; after that, the next
    /// commit writes the WAL from its start again.
    #[test]
    fn deferred_checkpoints_run_when_asked_and_the_wal_starts_over() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0);
        t.db.defer_checkpoints();
        let pages = || WAL_PAGES.with(std::cell::Cell::get);
        let mut last = 0;
        for i in 0..5 {
            t.db.save_messages(&[text(a.id, Peer::User(a.id), &format!("{i}"))], i)
                .expect("save");
            assert!(pages() > last, "the WAL grows: {} after {last}", pages());
            let wrote = t.db.take_commit_pages();
            assert_eq!(wrote, u64::try_from(pages() - last).expect("grew"));
            assert_eq!(t.db.take_commit_pages(), 0, "taken");
            last = pages();
        }
        assert!(
            !t.db
                .checkpoint_if_over(i64::from(last) + 1)
                .expect("not due")
        );
        assert!(t.db.checkpoint_if_over(i64::from(last)).expect("due"));
        t.db.save_messages(&[text(a.id, Peer::User(a.id), "after")], 9)
            .expect("save");
        assert!(pages() < last, "the WAL started over: {} pages", pages());
        assert_eq!(
            t.db.take_commit_pages(),
            u64::try_from(pages()).expect("pages"),
            "the commit that started the WAL over wrote all of it"
        );
        let all = t.db.messages_for(a.id, 0, 10).expect("q");
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn open_sets_wal_full_sync_and_foreign_keys() {
        let t = test_db();
        let c = &t.db.conn;
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        let sync: i64 = c
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("synchronous");
        assert_eq!(sync, 2, "FULL");
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .expect("foreign_keys");
        assert_eq!(fk, 1);
    }

    #[test]
    fn reopen_keeps_data_and_does_not_migrate_again() {
        let mut t = test_db();
        let version = t.db.schema_version().expect("version");
        assert_eq!(version, schema::LATEST);
        let alice = user(&mut t.db, "13800000001", 1);
        let path = t.path();
        drop(t.db);

        let mut conn = Connection::open(&path).expect("raw open");
        assert_eq!(schema::migrate(&mut conn).expect("migrate"), 0);
        drop(conn);

        let db = Db::open(&path).expect("reopen");
        assert_eq!(db.schema_version().expect("version"), version);
        assert_eq!(db.user_by_id(alice.id).expect("query"), Some(alice));
    }

    #[test]
    fn newer_schema_is_refused() {
        let t = test_db();
        t.db.conn
            .pragma_update(None, "user_version", schema::LATEST + 1)
            .expect("set version");
        let path = t.path();
        drop(t.db);
        let err = Db::open(&path).expect_err("too new");
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn open_creates_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("new.db");
        assert!(!path.exists());
        Db::open(&path).expect("open");
        assert!(path.exists());
    }

    #[test]
    fn second_connection_sees_committed_data() {
        let mut t = test_db();
        let mut other = Db::open(&t.path()).expect("second connection");
        let alice = user(&mut t.db, "13800000001", 1);
        assert_eq!(
            other.user_by_id(alice.id).expect("read"),
            Some(alice.clone())
        );

        // And the other way round, with writes from both.
        // A reader's transaction sees one snapshot and does not block the writer.
        other.conn.execute_batch("BEGIN").expect("begin read");
        let count = |db: &Db| -> i64 {
            db.conn
                .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(count(&other), 1);
        let carol = user(&mut t.db, "13800000003", 1);
        assert_eq!(count(&other), 1, "snapshot");
        other.conn.execute_batch("COMMIT").expect("end read");
        assert_eq!(count(&other), 2);
        assert_eq!(other.user_by_id(carol.id).expect("read"), Some(carol));

        let bob = user(&mut other, "13800000002", 2);
        t.db.add_friend(alice.id, bob.id, 3).expect("friends");
        assert!(other.are_friends(bob.id, alice.id).expect("read"));

        // Writers on two threads: the busy timeout serialises them, nothing is lost.
        let path = t.path();
        let handle = std::thread::spawn(move || {
            let mut db = Db::open(&path).expect("thread connection");
            for i in 0..20 {
                user(&mut db, &format!("1390000{i:04}"), 10);
            }
        });
        for i in 0..20 {
            user(&mut t.db, &format!("1370000{i:04}"), 10);
        }
        handle.join().expect("thread");
        let n: i64 =
            t.db.conn
                .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
                .expect("count");
        assert_eq!(n, 43);
    }

    #[test]
    fn db_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Db>();
        fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
        assert_error::<StoreError>();
    }

    #[test]
    fn errors_read_like_sentences() {
        assert_eq!(
            StoreError::TooManyGroups { max: 5 }.to_string(),
            "a user can own at most 5 groups"
        );
        assert_eq!(
            StoreError::MobileTaken.to_string(),
            "this mobile number is already registered"
        );
    }
}

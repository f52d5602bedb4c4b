//! Revocations: how `fastim admin`, in a process of its own, tells a running server
//! that sockets it holds open must close.
//!
//! A block, a deletion, a password change or ended sessions write a row here in the same
//! transaction as the change itself, so the row exists exactly when the change does. A
//! server reads the rows after the last one it has seen ([`Db::revocations_after`], a
//! primary-key range: cheap enough to poll every few seconds) and closes the chat
//! sockets each row names. Rows a server started after do not concern it: sockets it
//! opens later were authorized against the database as it then was
//! ([`Db::revocation_cursor`] is where a server starts reading).
//!
//! Only the newest [`KEEP_REVOCATIONS`] rows are kept (each write prunes the older
//! ones); a server reads them within seconds.

use rusqlite::{Connection, params};

use super::{Db, Result, sql_limit};

/// Rows kept in `revocations`; older ones are pruned when a new one is written.
pub const KEEP_REVOCATIONS: i64 = 10_000;

/// Why sockets must close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The user was blocked (`admin user block`).
    Blocked,
    /// The user was deleted (`admin user delete`).
    Deleted,
    /// Sessions were ended (`admin session revoke`).
    Revoked,
    /// The password was changed, which ends every session (`admin user passwd`).
    PasswordChanged,
}

impl Reason {
    fn as_sql(self) -> &'static str {
        match self {
            Reason::Blocked => "blocked",
            Reason::Deleted => "deleted",
            Reason::Revoked => "revoked",
            Reason::PasswordChanged => "password",
        }
    }

    fn from_sql(s: &str) -> Option<Reason> {
        Some(match s {
            "blocked" => Reason::Blocked,
            "deleted" => Reason::Deleted,
            "revoked" => Reason::Revoked,
            "password" => Reason::PasswordChanged,
            _ => return None,
        })
    }

    /// The reason of the WebSocket close frame the server sends (with 1008).
    pub fn close_reason(self) -> &'static str {
        match self {
            Reason::Blocked => "account blocked",
            Reason::Deleted => "account deleted",
            Reason::Revoked => "session revoked",
            Reason::PasswordChanged => "password changed",
        }
    }
}

/// Which sockets a revocation closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Its place in the table: read on from here.
    pub seq: i64,
    /// The user whose sockets close; `None`: every user's.
    pub user: Option<i64>,
    /// Only the sockets opened with this session (the SHA-256 of its token); `None`:
    /// every session of `user`.
    pub session: Option<[u8; 32]>,
    /// Why.
    pub reason: Reason,
}

/// Records a revocation inside the caller's transaction, and prunes old rows.
pub(super) fn record(
    conn: &Connection,
    user: Option<i64>,
    session: Option<[u8; 32]>,
    reason: Reason,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO revocations (user_id, token_digest, reason) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![user, session, reason.as_sql()])?;
    conn.prepare_cached("DELETE FROM revocations WHERE seq <= last_insert_rowid() - ?1")?
        .execute([KEEP_REVOCATIONS])?;
    Ok(())
}

impl Db {
    /// The newest revocation's `seq` (0 if there is none): a server reads the rows after it.
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn revocation_cursor(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM revocations", [], |r| {
                r.get(0)
            })?)
    }

    /// At most `limit` revocations after `seq`, oldest first.
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn revocations_after(&self, seq: i64, limit: usize) -> Result<Vec<Revocation>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, user_id, token_digest, reason FROM revocations
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![seq, sql_limit(limit)], |r| {
            let reason: String = r.get(3)?;
            Ok(Revocation {
                seq: r.get(0)?,
                user: r.get(1)?,
                session: r.get(2)?,
                // The table's CHECK admits only the four names.
                reason: Reason::from_sql(&reason).unwrap_or(Reason::Revoked),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn rows_are_read_after_a_cursor_in_order_and_old_ones_are_pruned() {
        let t = test_db();
        assert_eq!(t.db.revocation_cursor().expect("cursor"), 0);
        record(&t.db.conn, Some(7), None, Reason::Blocked).expect("record");
        let start = t.db.revocation_cursor().expect("cursor");
        record(&t.db.conn, Some(7), Some([3; 32]), Reason::Revoked).expect("record");
        record(&t.db.conn, None, None, Reason::Revoked).expect("record");
        record(&t.db.conn, Some(8), None, Reason::PasswordChanged).expect("record");
        record(&t.db.conn, Some(9), None, Reason::Deleted).expect("record");
        let rows = t.db.revocations_after(start, 100).expect("rows");
        assert_eq!(
            rows.iter()
                .map(|r| (r.user, r.session, r.reason))
                .collect::<Vec<_>>(),
            [
                (Some(7), Some([3; 32]), Reason::Revoked),
                (None, None, Reason::Revoked),
                (Some(8), None, Reason::PasswordChanged),
                (Some(9), None, Reason::Deleted),
            ]
        );
        assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
        let first_two = t.db.revocations_after(start, 2).expect("limited");
        assert_eq!(first_two, rows[..2]);
        assert_eq!(t.db.revocations_after(rows[3].seq, 100).expect("none"), []);

        t.db.conn.execute_batch("BEGIN").expect("begin");
        for _ in 0..KEEP_REVOCATIONS {
            record(&t.db.conn, Some(1), None, Reason::Revoked).expect("record");
        }
        t.db.conn.execute_batch("COMMIT").expect("commit");
        let count: i64 =
            t.db.conn
                .query_row("SELECT count(*) FROM revocations", [], |r| r.get(0))
                .expect("count");
        assert_eq!(count, KEEP_REVOCATIONS);
        // After pruning every row, a new one still comes after any old cursor.
        let cursor = t.db.revocation_cursor().expect("cursor");
        t.db.conn
            .execute("DELETE FROM revocations", [])
            .expect("prune all");
        record(&t.db.conn, Some(2), None, Reason::Blocked).expect("record");
        assert_eq!(t.db.revocations_after(cursor, 10).expect("new").len(), 1);
    }
}

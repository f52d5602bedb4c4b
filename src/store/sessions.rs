//! Login sessions, keyed by the SHA-256 digest of their token.
//!
//! A user may hold many sessions (one per device); logging out ends only the one whose
//! token is presented, and every session expires (fastIM's single token never did,
//! FASTIM.md §1.9 item 5).

use rusqlite::{OptionalExtension, params};

use super::{Db, Result, no_such_user};

impl Db {
    /// Stores a session for `user_id` that is valid while `now < expires_at`.
    ///
    /// `token_digest` is [`crate::secret::token_digest`] of the token given to the client.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`] if the user does not exist; [`StoreError::Sqlite`] on a
    /// digest collision (which 256 random bits make impossible in practice).
    pub fn create_session(
        &mut self,
        user_id: i64,
        token_digest: [u8; 32],
        expires_at: i64,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (token_digest, user_id, expires_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![token_digest, user_id, expires_at])
            .map_err(no_such_user)?;
        Ok(())
    }

    /// The user whose session has this digest, if the session exists and has not expired
    /// (`now < expires_at`).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn session_user(&self, token_digest: [u8; 32], now: i64) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT user_id FROM sessions WHERE token_digest = ?1 AND expires_at > ?2",
            )?
            .query_row(params![token_digest, now], |row| row.get(0))
            .optional()?)
    }

    /// Ends one session (logout). Returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn delete_session(&mut self, token_digest: [u8; 32]) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM sessions WHERE token_digest = ?1")?
            .execute([token_digest])?;
        Ok(n > 0)
    }

    /// Removes every session expired at `now`; returns how many. Expired sessions are
    /// already refused by [`Db::session_user`]: this only reclaims space.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn delete_expired_sessions(&mut self, now: i64) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?
            .execute([now])?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::StoreError;
    use super::super::testutil::*;

    fn digest(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn session_is_valid_until_it_expires() {
        let mut t = test_db();
        let alice = user(&mut t.db, "13800000001", 0);
        t.db.create_session(alice.id, digest(1), 1_000)
            .expect("create");
        assert_eq!(t.db.session_user(digest(1), 0).expect("q"), Some(alice.id));
        assert_eq!(
            t.db.session_user(digest(1), 999).expect("q"),
            Some(alice.id)
        );
        assert_eq!(t.db.session_user(digest(1), 1_000).expect("q"), None);
        assert_eq!(t.db.session_user(digest(2), 0).expect("q"), None);
    }

    #[test]
    fn several_sessions_and_logout_of_one() {
        let mut t = test_db();
        let alice = user(&mut t.db, "13800000001", 0);
        t.db.create_session(alice.id, digest(1), 1_000)
            .expect("phone");
        t.db.create_session(alice.id, digest(2), 1_000)
            .expect("laptop");
        assert!(t.db.delete_session(digest(1)).expect("logout"));
        assert!(!t.db.delete_session(digest(1)).expect("again"));
        assert_eq!(t.db.session_user(digest(1), 0).expect("q"), None);
        assert_eq!(t.db.session_user(digest(2), 0).expect("q"), Some(alice.id));
    }

    #[test]
    fn expired_sessions_are_swept() {
        let mut t = test_db();
        let alice = user(&mut t.db, "13800000001", 0);
        for (n, expires) in [(1, 100), (2, 200), (3, 300)] {
            t.db.create_session(alice.id, digest(n), expires)
                .expect("create");
        }
        assert_eq!(t.db.delete_expired_sessions(200).expect("sweep"), 2);
        assert_eq!(t.db.delete_expired_sessions(200).expect("again"), 0);
        assert_eq!(
            t.db.session_user(digest(3), 200).expect("q"),
            Some(alice.id)
        );
    }

    #[test]
    fn session_needs_a_user() {
        let mut t = test_db();
        let err =
            t.db.create_session(42, digest(1), 1_000)
                .expect_err("no user");
        assert!(matches!(err, StoreError::NoSuchUser), "{err:?}");
    }

    #[test]
    fn works_with_real_token_digests() {
        let mut t = test_db();
        let alice = user(&mut t.db, "13800000001", 0);
        let token = crate::secret::new_token();
        t.db.create_session(alice.id, crate::secret::token_digest(&token), 10)
            .expect("create");
        assert_eq!(
            t.db.session_user(crate::secret::token_digest(&token), 5)
                .expect("q"),
            Some(alice.id)
        );
        let stored: Vec<u8> =
            t.db.conn
                .query_row("SELECT token_digest FROM sessions", [], |r| r.get(0))
                .expect("raw");
        assert_ne!(stored, token.as_bytes(), "only the digest is stored");
    }
}

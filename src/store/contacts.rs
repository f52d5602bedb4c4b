//! Friendships. Mutual, as in fastIM: adding a friend writes the rows (a, b) and (b, a) in
//! one transaction, so "b is a friend of a" and "a is a friend of b" are the same fact and
//! each user's list is one index range.

use rusqlite::params;

use super::users::{USER_COLUMNS, user_exists, user_from_row};
use super::{Db, Result, StoreError, User, taken_or};

impl Db {
    /// Makes `user` and `friend` friends of each other at once (`--instant-friends`,
    /// and seeding); a request waiting between them is answered by it.
    ///
    /// # Errors
    /// [`StoreError::SelfFriend`], [`StoreError::NoSuchUser`] (either one missing),
    /// [`StoreError::AlreadyFriends`], [`StoreError::BlockedPair`].
    pub fn add_friend(&mut self, user: i64, friend: i64, now: i64) -> Result<()> {
        if user == friend {
            return Err(StoreError::SelfFriend);
        }
        let tx = self.write_tx()?;
        if !user_exists(&tx, user)? || !user_exists(&tx, friend)? {
            return Err(StoreError::NoSuchUser);
        }
        if tx
            .prepare_cached(
                "SELECT 1 FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2)
                                         OR (blocker_id = ?2 AND blocked_id = ?1)",
            )?
            .exists([user, friend])?
        {
            return Err(StoreError::BlockedPair);
        }
        tx.prepare_cached(
            "DELETE FROM friend_requests WHERE (from_id = ?1 AND to_id = ?2)
                                            OR (from_id = ?2 AND to_id = ?1)",
        )?
        .execute([user, friend])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO friends (user_id, friend_id, created_at) VALUES (?1, ?2, ?3)",
            )?;
            for (a, b) in [(user, friend), (friend, user)] {
                insert
                    .execute(params![a, b, now])
                    .map_err(taken_or(StoreError::AlreadyFriends))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The friends of `user`, oldest friendship first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only (an unknown user has no friends).
    pub fn friends(&self, user: i64) -> Result<Vec<User>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM friends f JOIN users u ON u.id = f.friend_id
             WHERE f.user_id = ?1
             ORDER BY f.created_at, u.id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([user], user_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every friendship once, as `(smaller id, larger id)`: for the server's in-memory
    /// send-rights index at start-up.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn all_friendships(&self) -> Result<Vec<(i64, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT user_id, friend_id FROM friends WHERE user_id < friend_id")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether `a` and `b` are friends.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn are_friends(&self, a: i64, b: i64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2")?
            .exists([a, b])?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn friendship_is_mutual() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0);
        let b = user(&mut t.db, "13800000002", 0);
        let c = user(&mut t.db, "13800000003", 0);
        t.db.add_friend(a.id, b.id, 10).expect("a+b");
        t.db.add_friend(c.id, a.id, 20).expect("c+a");
        assert!(t.db.are_friends(a.id, b.id).expect("q"));
        assert!(t.db.are_friends(b.id, a.id).expect("q"));
        assert!(!t.db.are_friends(b.id, c.id).expect("q"));
        assert_eq!(t.db.friends(a.id).expect("q"), [b.clone(), c.clone()]);
        assert_eq!(t.db.friends(b.id).expect("q"), std::slice::from_ref(&a));
        assert_eq!(t.db.friends(c.id).expect("q"), std::slice::from_ref(&a));
    }

    #[test]
    fn add_friend_errors() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0);
        let b = user(&mut t.db, "13800000002", 0);
        assert!(matches!(
            t.db.add_friend(a.id, a.id, 1),
            Err(StoreError::SelfFriend)
        ));
        assert!(matches!(
            t.db.add_friend(a.id, 999, 1),
            Err(StoreError::NoSuchUser)
        ));
        assert!(matches!(
            t.db.add_friend(999, a.id, 1),
            Err(StoreError::NoSuchUser)
        ));
        t.db.add_friend(a.id, b.id, 1).expect("first");
        assert!(matches!(
            t.db.add_friend(a.id, b.id, 2),
            Err(StoreError::AlreadyFriends)
        ));
        assert!(matches!(
            t.db.add_friend(b.id, a.id, 2),
            Err(StoreError::AlreadyFriends)
        ));
        assert_eq!(t.db.friends(a.id).expect("q").len(), 1, "no half rows left");
        assert_eq!(t.db.friends(b.id).expect("q").len(), 1);
    }

    #[test]
    fn friends_of_nobody() {
        let t = test_db();
        assert!(t.db.friends(12345).expect("q").is_empty());
    }
}

//! Friend requests and blocks: friendship by consent.
//!
//! A request is one row (from, to); accepting it writes the mutual friendship (the two
//! `friends` rows, `contacts.rs`) and deletes the request in one transaction, so a pair
//! is never both requested and friends. Two requests that meet (b asks a while a's
//! request to b waits) become a friendship at once. A block is one row (blocker,
//! blocked); writing it ends the pair's friendship and deletes their requests in both
//! directions, in the same transaction, and while it stands neither may request the
//! other. Every table cascades with `users`.

use rusqlite::{OptionalExtension, Transaction, params};

use super::users::{USER_COLUMNS, user_exists, user_from_row};
use super::{Db, Result, StoreError, User};

/// What [`Db::request_friend`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new request, made at this time.
    Requested(i64),
    /// The same request was already waiting, since this time: nothing changed.
    AlreadyRequested(i64),
    /// The other side had asked already: they are friends now.
    Befriended,
}

/// What [`Db::block`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockOutcome {
    /// The block is new (false: it stood already).
    pub new: bool,
    /// They were friends, and no longer are.
    pub were_friends: bool,
    /// The blocker's own request to the blocked user was withdrawn.
    pub withdrew_request: bool,
    /// The blocked user's request to the blocker was deleted.
    pub dropped_request: bool,
}

/// One listed user with the time of the row (request or block), unix ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dated {
    /// The other user.
    pub user: User,
    /// When the request or block was made.
    pub at: i64,
}

/// A user's waiting requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Requests to the user, newest first.
    pub incoming: Vec<Dated>,
    /// The user's own requests, newest first.
    pub outgoing: Vec<Dated>,
}

fn is_blocked_pair(tx: &Transaction<'_>, a: i64, b: i64) -> rusqlite::Result<bool> {
    tx.prepare_cached(
        "SELECT 1 FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2)
                                 OR (blocker_id = ?2 AND blocked_id = ?1)",
    )?
    .exists([a, b])
}

fn friends_in(tx: &Transaction<'_>, a: i64, b: i64) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2")?
        .exists([a, b])
}

fn befriend_in(tx: &Transaction<'_>, a: i64, b: i64, now: i64) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO friends (user_id, friend_id, created_at) VALUES (?1, ?2, ?3)",
    )?;
    insert.execute(params![a, b, now])?;
    insert.execute(params![b, a, now])?;
    Ok(())
}

/// Deletes the request from `from` to `to`; whether there was one.
fn delete_request(tx: &Transaction<'_>, from: i64, to: i64) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("DELETE FROM friend_requests WHERE from_id = ?1 AND to_id = ?2")?
        .execute([from, to])?
        > 0)
}

fn unfriend_in(tx: &Transaction<'_>, a: i64, b: i64) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM friends WHERE (user_id = ?1 AND friend_id = ?2)
                                    OR (user_id = ?2 AND friend_id = ?1)",
        )?
        .execute([a, b])?
        > 0)
}

impl Db {
    /// `from` asks `to` to be friends. If `to` had asked `from` already, they become
    /// friends at once. Asking again changes nothing.
    ///
    /// # Errors
    /// [`StoreError::SelfFriend`], [`StoreError::NoSuchUser`] (either missing),
    /// [`StoreError::AlreadyFriends`], [`StoreError::BlockedPair`] (either blocked the
    /// other), [`StoreError::TooManyRequests`] (`from` has `max_pending` requests
    /// waiting).
    pub fn request_friend(
        &mut self,
        from: i64,
        to: i64,
        now: i64,
        max_pending: usize,
    ) -> Result<RequestOutcome> {
        if from == to {
            return Err(StoreError::SelfFriend);
        }
        let tx = self.write_tx()?;
        if !user_exists(&tx, from)? || !user_exists(&tx, to)? {
            return Err(StoreError::NoSuchUser);
        }
        if friends_in(&tx, from, to)? {
            return Err(StoreError::AlreadyFriends);
        }
        if is_blocked_pair(&tx, from, to)? {
            return Err(StoreError::BlockedPair);
        }
        let waiting: Option<i64> = tx
            .prepare_cached(
                "SELECT created_at FROM friend_requests WHERE from_id = ?1 AND to_id = ?2",
            )?
            .query_row([from, to], |r| r.get(0))
            .optional()?;
        if let Some(at) = waiting {
            return Ok(RequestOutcome::AlreadyRequested(at));
        }
        if delete_request(&tx, to, from)? {
            befriend_in(&tx, from, to, now)?;
            tx.commit()?;
            return Ok(RequestOutcome::Befriended);
        }
        let pending: i64 = tx
            .prepare_cached("SELECT count(*) FROM friend_requests WHERE from_id = ?1")?
            .query_row([from], |r| r.get(0))?;
        if pending as usize >= max_pending {
            return Err(StoreError::TooManyRequests { max: max_pending });
        }
        tx.prepare_cached(
            "INSERT INTO friend_requests (from_id, to_id, created_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![from, to, now])?;
        tx.commit()?;
        Ok(RequestOutcome::Requested(now))
    }

    /// `user` accepts the request of `from`: they are friends.
    ///
    /// # Errors
    /// [`StoreError::NoSuchRequest`] if `from` has no request waiting for `user`.
    pub fn accept_request(&mut self, user: i64, from: i64, now: i64) -> Result<()> {
        let tx = self.write_tx()?;
        if !delete_request(&tx, from, user)? {
            return Err(StoreError::NoSuchRequest);
        }
        befriend_in(&tx, user, from, now)?;
        tx.commit()?;
        Ok(())
    }

    /// `user` declines the request of `from` (who may ask again).
    ///
    /// # Errors
    /// [`StoreError::NoSuchRequest`].
    pub fn decline_request(&mut self, user: i64, from: i64) -> Result<()> {
        self.drop_request(from, user)
    }

    /// `user` withdraws their own request to `to`.
    ///
    /// # Errors
    /// [`StoreError::NoSuchRequest`].
    pub fn cancel_request(&mut self, user: i64, to: i64) -> Result<()> {
        self.drop_request(user, to)
    }

    /// Deletes the request of `from` to `to`, answered or withdrawn.
    fn drop_request(&mut self, from: i64, to: i64) -> Result<()> {
        let tx = self.write_tx()?;
        if !delete_request(&tx, from, to)? {
            return Err(StoreError::NoSuchRequest);
        }
        tx.commit()?;
        Ok(())
    }

    /// Ends the friendship of `user` and `friend` (both directions).
    ///
    /// # Errors
    /// [`StoreError::NotFriends`].
    pub fn remove_friend(&mut self, user: i64, friend: i64) -> Result<()> {
        let tx = self.write_tx()?;
        if !unfriend_in(&tx, user, friend)? {
            return Err(StoreError::NotFriends);
        }
        tx.commit()?;
        Ok(())
    }

    /// `blocker` blocks `blocked`: their friendship and requests end. Blocking again
    /// changes nothing.
    ///
    /// # Errors
    /// [`StoreError::SelfFriend`] (blocking oneself), [`StoreError::NoSuchUser`].
    pub fn block(&mut self, blocker: i64, blocked: i64, now: i64) -> Result<BlockOutcome> {
        if blocker == blocked {
            return Err(StoreError::SelfFriend);
        }
        let tx = self.write_tx()?;
        if !user_exists(&tx, blocker)? || !user_exists(&tx, blocked)? {
            return Err(StoreError::NoSuchUser);
        }
        let new = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO blocks (blocker_id, blocked_id, created_at)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![blocker, blocked, now])?
            > 0;
        let outcome = BlockOutcome {
            new,
            were_friends: unfriend_in(&tx, blocker, blocked)?,
            withdrew_request: delete_request(&tx, blocker, blocked)?,
            dropped_request: delete_request(&tx, blocked, blocker)?,
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// `blocker` lifts the block of `blocked`; whether there was one.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn unblock(&mut self, blocker: i64, blocked: i64) -> Result<bool> {
        let tx = self.write_tx()?;
        let n = tx
            .prepare_cached("DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2")?
            .execute([blocker, blocked])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// The requests waiting for `user` and those `user` made, newest first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn friend_requests(&self, user: i64) -> Result<Requests> {
        let list = |sql: &str| -> Result<Vec<Dated>> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let rows = stmt.query_map([user], |row| {
                Ok(Dated {
                    user: user_from_row(row)?,
                    at: row.get(7)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        Ok(Requests {
            incoming: list(&format!(
                "SELECT {USER_COLUMNS}, r.created_at FROM friend_requests r
                 JOIN users u ON u.id = r.from_id
                 WHERE r.to_id = ?1 ORDER BY r.created_at DESC, u.id DESC"
            ))?,
            outgoing: list(&format!(
                "SELECT {USER_COLUMNS}, r.created_at FROM friend_requests r
                 JOIN users u ON u.id = r.to_id
                 WHERE r.from_id = ?1 ORDER BY r.created_at DESC, u.id DESC"
            ))?,
        })
    }

    /// The users `user` blocked, newest block first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn blocked_users(&self, user: i64) -> Result<Vec<Dated>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, b.created_at FROM blocks b JOIN users u ON u.id = b.blocked_id
             WHERE b.blocker_id = ?1 ORDER BY b.created_at DESC, u.id DESC"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([user], |row| {
            Ok(Dated {
                user: user_from_row(row)?,
                at: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every block as `(blocker, blocked)`: for the server's index at start-up.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn all_blocks(&self) -> Result<Vec<(i64, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT blocker_id, blocked_id FROM blocks")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn a_request_waits_for_consent_and_meeting_requests_befriend() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0).id;
        let b = user(&mut t.db, "13800000002", 0).id;
        let c = user(&mut t.db, "13800000003", 0).id;
        assert_eq!(
            t.db.request_friend(a, b, 10, 100).expect("ask"),
            RequestOutcome::Requested(10)
        );
        assert!(!t.db.are_friends(a, b).expect("q"), "not before consent");
        assert_eq!(
            t.db.request_friend(a, b, 20, 100).expect("again"),
            RequestOutcome::AlreadyRequested(10)
        );
        let r = t.db.friend_requests(b).expect("q");
        assert_eq!(r.incoming.len(), 1);
        assert_eq!((r.incoming[0].user.id, r.incoming[0].at), (a, 10));
        assert!(r.outgoing.is_empty());
        assert_eq!(t.db.friend_requests(a).expect("q").outgoing[0].user.id, b);
        t.db.accept_request(b, a, 30).expect("accept");
        assert!(t.db.are_friends(a, b).expect("q") && t.db.are_friends(b, a).expect("q"));
        assert_eq!(t.db.friend_requests(b).expect("q"), Requests::default());
        assert!(matches!(
            t.db.accept_request(b, a, 31),
            Err(StoreError::NoSuchRequest)
        ));
        assert!(matches!(
            t.db.request_friend(b, a, 32, 100),
            Err(StoreError::AlreadyFriends)
        ));
        // Two requests that meet.
        t.db.request_friend(c, a, 40, 100).expect("c asks");
        assert_eq!(
            t.db.request_friend(a, c, 41, 100).expect("a asks"),
            RequestOutcome::Befriended
        );
        assert!(t.db.are_friends(a, c).expect("q"));
        assert!(t.db.friend_requests(c).expect("q").outgoing.is_empty());
        // Errors.
        assert!(matches!(
            t.db.request_friend(a, a, 1, 100),
            Err(StoreError::SelfFriend)
        ));
        assert!(matches!(
            t.db.request_friend(a, 999, 1, 100),
            Err(StoreError::NoSuchUser)
        ));
    }

    #[test]
    fn decline_remove_and_the_pending_cap() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0).id;
        let b = user(&mut t.db, "13800000002", 0).id;
        let c = user(&mut t.db, "13800000003", 0).id;
        t.db.request_friend(a, b, 1, 1).expect("ask");
        assert!(matches!(
            t.db.request_friend(a, c, 2, 1),
            Err(StoreError::TooManyRequests { max: 1 })
        ));
        t.db.decline_request(b, a).expect("decline");
        assert!(matches!(
            t.db.decline_request(b, a),
            Err(StoreError::NoSuchRequest)
        ));
        t.db.request_friend(a, c, 3, 1).expect("room again");
        t.db.cancel_request(a, c).expect("withdraw");
        assert!(t.db.friend_requests(c).expect("q").incoming.is_empty());
        t.db.add_friend(a, b, 4).expect("friends");
        t.db.remove_friend(b, a).expect("remove");
        assert!(!t.db.are_friends(a, b).expect("q") && !t.db.are_friends(b, a).expect("q"));
        assert!(matches!(
            t.db.remove_friend(a, b),
            Err(StoreError::NotFriends)
        ));
    }

    #[test]
    fn a_block_ends_friendship_and_requests_and_stops_new_ones() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0).id;
        let b = user(&mut t.db, "13800000002", 0).id;
        let c = user(&mut t.db, "13800000003", 0).id;
        t.db.add_friend(a, b, 1).expect("friends");
        t.db.request_friend(c, a, 2, 100).expect("c asks a");
        let o = t.db.block(a, b, 3).expect("block b");
        assert_eq!(
            o,
            BlockOutcome {
                new: true,
                were_friends: true,
                ..BlockOutcome::default()
            }
        );
        assert!(!t.db.are_friends(a, b).expect("q"));
        let o = t.db.block(a, c, 4).expect("block c");
        assert!(o.new && o.dropped_request && !o.were_friends);
        assert!(!t.db.block(a, c, 5).expect("again").new);
        for (x, y) in [(b, a), (a, b), (c, a)] {
            assert!(
                matches!(
                    t.db.request_friend(x, y, 6, 100),
                    Err(StoreError::BlockedPair)
                ),
                "{x} → {y}"
            );
        }
        let listed: Vec<i64> =
            t.db.blocked_users(a)
                .expect("q")
                .iter()
                .map(|d| d.user.id)
                .collect();
        assert_eq!(listed, [c, b]);
        assert_eq!(t.db.all_blocks().expect("q").len(), 2);
        assert!(t.db.unblock(a, b).expect("unblock"));
        assert!(!t.db.unblock(a, b).expect("again"));
        t.db.request_friend(b, a, 7, 100).expect("may ask again");
        assert!(matches!(t.db.block(a, a, 8), Err(StoreError::SelfFriend)));
    }

    #[test]
    fn requests_and_blocks_go_with_a_deleted_user() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0).id;
        let b = user(&mut t.db, "13800000002", 0).id;
        let c = user(&mut t.db, "13800000003", 0).id;
        t.db.request_friend(a, b, 1, 100).expect("ask");
        t.db.request_friend(c, a, 1, 100).expect("ask");
        t.db.block(b, c, 2).expect("block");
        t.db.block(a, c, 2).expect("block");
        t.db.delete_user(a).expect("delete");
        assert!(t.db.friend_requests(b).expect("q").incoming.is_empty());
        assert!(t.db.friend_requests(c).expect("q").outgoing.is_empty());
        assert_eq!(t.db.all_blocks().expect("q"), [(b, c)]);
    }
}

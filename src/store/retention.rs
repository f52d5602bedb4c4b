//! Retention: removing messages older than a cut-off, in small batches, and saying where
//! history now starts.
//!
//! Messages are removed in id order from the oldest, and removal stops at the first
//! message that is not old enough, even if a later one is (a clock that stepped back).
//! So what retention removed is always a prefix of the ids: every message with an id up
//! to the *horizon* (the largest id removed, kept in the one-row `retention` table) is
//! gone, and every message above it is untouched by retention. History starts at
//! `horizon + 1` ([`Db::history_start`]), the same for every user and every
//! conversation, which is what sync and history replies tell a client (`oldest`).
//!
//! Each batch is one short write transaction (the chat writer waits at most one batch
//! for the lock); the caller pauses between batches. Message ids are never reused
//! (`AUTOINCREMENT`), so sync cursors and group join points keep their meaning. Files
//! uploaded for removed messages are not removed (an upload is stored once per content
//! and may be referenced by other messages or profiles).

use rusqlite::params;

use super::{Db, Result, sql_limit};

/// What one batch of [`Db::remove_old_messages`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionBatch {
    /// Messages removed by this batch.
    pub removed: usize,
    /// The largest message id removed so far, by every batch (0: none yet).
    pub horizon: i64,
    /// Whether more old messages may wait: call again (after a pause).
    pub more: bool,
}

impl Db {
    /// The first message id of kept history: retention has removed every message with a
    /// smaller id (1 while it has removed nothing).
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only.
    pub fn history_start(&self) -> Result<i64> {
        let horizon: i64 = self
            .conn
            .prepare_cached("SELECT horizon FROM retention WHERE id = 1")?
            .query_row([], |row| row.get(0))?;
        Ok(horizon + 1)
    }

    /// Removes up to `batch` of the oldest messages created before `cutoff` (unix ms;
    /// a message created at `cutoff` stays), in id order, stopping at the first message
    /// that is not older (module documentation). One transaction.
    ///
    /// # Errors
    /// [`super::StoreError::Sqlite`] only; nothing is removed then.
    pub fn remove_old_messages(&mut self, cutoff: i64, batch: usize) -> Result<RetentionBatch> {
        let tx = self.write_tx()?;
        let horizon: i64 = tx.query_row("SELECT horizon FROM retention WHERE id = 1", [], |r| {
            r.get(0)
        })?;
        let rows: Vec<(i64, i64)> = tx
            .prepare_cached(
                "SELECT id, created_at FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![horizon, sql_limit(batch)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let old = rows.iter().take_while(|(_, at)| *at < cutoff).count();
        let Some(&(last, _)) = rows[..old].last() else {
            return Ok(RetentionBatch {
                removed: 0,
                horizon,
                more: false,
            });
        };
        let removed = tx.execute(
            "DELETE FROM messages WHERE id > ?1 AND id <= ?2",
            params![horizon, last],
        )?;
        tx.execute("UPDATE retention SET horizon = ?1 WHERE id = 1", [last])?;
        tx.commit()?;
        Ok(RetentionBatch {
            removed,
            horizon: last,
            more: old == rows.len() && rows.len() == batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{NewGroup, Peer};
    use super::*;

    const DAY: i64 = 86_400_000;

    /// Runs retention to the end with batches of `batch`; returns the batches.
    fn retain(db: &mut Db, cutoff: i64, batch: usize) -> Vec<RetentionBatch> {
        let mut done = Vec::new();
        loop {
            let b = db.remove_old_messages(cutoff, batch).expect("retention");
            done.push(b);
            if !b.more {
                return done;
            }
        }
    }

    #[test]
    fn removes_one_to_one_and_group_messages_before_the_cutoff_and_keeps_the_rest() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0).id;
        let b = user(&mut t.db, "13800000002", 0).id;
        t.db.add_friend(a, b, 0).expect("friends");
        let g =
            t.db.create_group(
                a,
                NewGroup {
                    name: "g".into(),
                    ..NewGroup::default()
                },
                5,
                0,
            )
            .expect("group")
            .id;
        t.db.join_group(b, g, 0).expect("join");
        let now = 100 * DAY;
        let cutoff = now - 7 * DAY;
        // Old, old at the boundary, then kept: exactly at the cutoff, and newer.
        let mut ids = Vec::new();
        for (at, to) in [
            (cutoff - 3 * DAY, Peer::User(b)),
            (cutoff - 2 * DAY, Peer::Group(g)),
            (cutoff - 1, Peer::User(a)),
            (cutoff - 1, Peer::Group(g)),
            (cutoff, Peer::User(b)),
            (cutoff, Peer::Group(g)),
            (now, Peer::User(b)),
        ] {
            ids.push(t.db.save_messages(&[text(a, to, "m")], at).expect("save")[0].id);
        }
        assert_eq!(t.db.history_start().expect("start"), 1);
        let batches = retain(&mut t.db, cutoff, 1_000);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].removed, 4);
        assert_eq!(batches[0].horizon, ids[3]);
        assert_eq!(t.db.history_start().expect("start"), ids[3] + 1);
        assert_eq!(
            assert_indexed(&t.db),
            (0, 3),
            "the removed messages' keys went too"
        );
        let left: Vec<i64> =
            t.db.messages_for(a, 0, 100)
                .expect("left")
                .iter()
                .map(|m| m.id)
                .collect();
        assert_eq!(left, ids[4..], "the cutoff itself is kept");
        let b_sees: Vec<i64> =
            t.db.messages_for(b, 0, 100)
                .expect("b")
                .iter()
                .map(|m| m.id)
                .collect();
        assert_eq!(b_sees, [ids[4], ids[5], ids[6]]);
        // Again: nothing more to do, the horizon stays.
        let again = retain(&mut t.db, cutoff, 1_000);
        assert_eq!(
            again,
            [RetentionBatch {
                removed: 0,
                horizon: ids[3],
                more: false
            }]
        );
        // Later, the window moves on.
        let later = retain(&mut t.db, now + 1, 1_000);
        assert_eq!(later[0].removed, 3);
        assert!(t.db.messages_for(a, 0, 100).expect("none").is_empty());
        assert_eq!(t.db.history_start().expect("start"), ids[6] + 1);
        // Ids are not reused after everything is gone.
        let next =
            t.db.save_messages(&[text(a, Peer::User(b), "new")], now)
                .expect("save");
        assert!(next[0].id > ids[6]);
    }

    #[test]
    fn batches_are_bounded_and_stop_at_the_first_message_that_is_not_old() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0).id;
        let old: Vec<_> = (0..25)
            .map(|i| text(a, Peer::User(a), &format!("{i}")))
            .collect();
        t.db.save_messages(&old, 10).expect("old");
        // A recent one, then an old one again (the clock stepped back): the prefix rule
        // keeps the second until the first goes.
        t.db.save_messages(&[text(a, Peer::User(a), "recent")], 1_000)
            .expect("recent");
        let stepped_back =
            t.db.save_messages(&[text(a, Peer::User(a), "stepped back")], 10)
                .expect("stepped back")[0]
                .id;
        let batches = retain(&mut t.db, 500, 10);
        let removed: Vec<usize> = batches.iter().map(|b| b.removed).collect();
        assert_eq!(removed, [10, 10, 5]);
        assert_eq!(
            batches.iter().map(|b| b.more).collect::<Vec<_>>(),
            [true, true, false]
        );
        let left: Vec<String> =
            t.db.messages_for(a, 0, 100)
                .expect("left")
                .into_iter()
                .map(|m| m.content)
                .collect();
        assert_eq!(left, ["recent", "stepped back"]);
        assert_eq!(t.db.history_start().expect("start"), stepped_back - 1);
        // A batch of exactly the old ones says "more" once, then finds nothing.
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0).id;
        let old: Vec<_> = (0..10).map(|_| text(a, Peer::User(a), "x")).collect();
        t.db.save_messages(&old, 10).expect("old");
        let removed: Vec<usize> = retain(&mut t.db, 500, 10)
            .iter()
            .map(|b| b.removed)
            .collect();
        assert_eq!(removed, [10, 0]);
    }

    #[test]
    fn an_empty_database_has_nothing_to_remove() {
        let mut t = test_db();
        assert_eq!(
            retain(&mut t.db, i64::MAX, 1_000),
            [RetentionBatch {
                removed: 0,
                horizon: 0,
                more: false
            }]
        );
        assert_eq!(t.db.history_start().expect("start"), 1);
    }
}

//! Pictures uploaded without a session, and when they stop being anonymous.
//!
//! fastIM's register page uploads the avatar before the account exists. Such an upload
//! is recorded here, one row per stored file (the picture and its thumbnail), and is
//! *adopted* (its rows removed) when an account takes it: as its avatar, or by
//! uploading the same picture with a session (files are named by their content, so it
//! is the same file). Rows that stay a day are swept with their files.
//!
//! A file without a row is never removed: a file already stored when an anonymous upload
//! of the same bytes arrives, and not recorded, came with a session (or before this
//! table existed). Every step runs under the write lock, with the file checks and
//! removals the caller passes in, so that no interleaving of an anonymous upload, an
//! upload with a session and the sweep can record or remove a file an account holds:
//!
//! - [`Db::record_anonymous_upload`] records a file only if it is missing (before it
//!   is written), else refreshes its row if it has one;
//! - [`Db::adopt_uploads`] removes the rows and, still under the lock, makes sure the
//!   files exist (an upload with a session writes its picture again if a sweep took it
//!   meanwhile);
//! - [`Db::sweep_anonymous_uploads`] removes old rows and their files under the lock.
//!
//! The store never touches the files itself: the caller's closures do.

use rusqlite::{OptionalExtension, params};

use super::{Db, Result, StoreError, sql_limit};

/// What one batch of [`Db::sweep_anonymous_uploads`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepBatch {
    /// Files whose rows were removed (and that `remove` was called for).
    pub removed: usize,
    /// Whether more old rows may wait: call again (after a pause).
    pub more: bool,
}

impl Db {
    /// Records the files of one upload made without a session at `now`: `names[0]` the
    /// picture, then its thumbnail if it has its own file. `exists` tells whether a
    /// file is stored. For each name: a row is refreshed to `now` (never moved back);
    /// a missing file gets a row; a stored file without a row belongs to an account and
    /// stays as it is. Call before writing the files.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only; nothing is recorded then.
    pub fn record_anonymous_upload(
        &mut self,
        names: &[&str],
        now: i64,
        exists: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let Some(&upload) = names.first() else {
            return Ok(());
        };
        let tx = self.write_tx()?;
        for &name in names {
            let known = tx
                .prepare_cached("SELECT 1 FROM anonymous_uploads WHERE name = ?1")?
                .query_row([name], |_| Ok(()))
                .optional()?
                .is_some();
            if known {
                tx.prepare_cached(
                    "UPDATE anonymous_uploads SET uploaded_at = max(uploaded_at, ?2) WHERE name = ?1",
                )?
                .execute(params![name, now])?;
            } else if !exists(name) {
                tx.prepare_cached(
                    "INSERT INTO anonymous_uploads (name, upload, uploaded_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![name, upload, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// An account takes the files `names` (its avatar, or a picture and its thumbnail
    /// uploaded with a session): their rows go, and the rows of the files uploaded
    /// together with them (a picture's thumbnail). Then, still under the write lock,
    /// `ensure` is called for each name: the caller writes the file again if it is
    /// missing (a sweep removed it just before). Returns the rows removed.
    ///
    /// # Errors
    /// [`StoreError::Io`] from `ensure`, [`StoreError::Sqlite`]; nothing is adopted then.
    pub fn adopt_uploads(
        &mut self,
        names: &[&str],
        mut ensure: impl FnMut(&str) -> std::io::Result<()>,
    ) -> Result<usize> {
        let tx = self.write_tx()?;
        let mut adopted = 0;
        for &name in names {
            adopted += tx
                .prepare_cached("DELETE FROM anonymous_uploads WHERE name = ?1 OR upload = ?1")?
                .execute([name])?;
        }
        for &name in names {
            ensure(name).map_err(StoreError::Io)?;
        }
        tx.commit()?;
        Ok(adopted)
    }

    /// Removes up to `batch` rows of files last uploaded without a session before
    /// `cutoff` (unix ms), oldest first, calling `remove` for each file under the write
    /// lock (a missing file is the caller's to ignore). One transaction.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only; no row is removed then (files `remove` took are
    /// gone; their rows go with the next sweep).
    pub fn sweep_anonymous_uploads(
        &mut self,
        cutoff: i64,
        batch: usize,
        mut remove: impl FnMut(&str),
    ) -> Result<SweepBatch> {
        let tx = self.write_tx()?;
        let names: Vec<String> = tx
            .prepare_cached(
                "SELECT name FROM anonymous_uploads WHERE uploaded_at < ?1
                 ORDER BY uploaded_at LIMIT ?2",
            )?
            .query_map(params![cutoff, sql_limit(batch)], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for name in &names {
            tx.prepare_cached("DELETE FROM anonymous_uploads WHERE name = ?1")?
                .execute([name])?;
            remove(name);
        }
        tx.commit()?;
        Ok(SweepBatch {
            removed: names.len(),
            more: names.len() == batch,
        })
    }

    /// Files recorded as uploaded without a session and not adopted yet.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn anonymous_upload_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM anonymous_uploads")?
            .query_row([], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::super::testutil::*;
    use super::*;

    const HOUR: i64 = 3_600_000;

    /// Files on a pretend disk.
    #[derive(Default)]
    struct Disk(RefCell<BTreeSet<String>>);

    impl Disk {
        fn has(&self, name: &str) -> bool {
            self.0.borrow().contains(name)
        }
        fn put(&self, name: &str) {
            self.0.borrow_mut().insert(name.to_owned());
        }
        fn take(&self, name: &str) {
            self.0.borrow_mut().remove(name);
        }
        fn names(&self) -> Vec<String> {
            self.0.borrow().iter().cloned().collect()
        }
    }

    /// An anonymous upload of `names` at `now`, recorded and then written.
    fn anonymous(db: &mut Db, disk: &Disk, names: &[&str], now: i64) {
        db.record_anonymous_upload(names, now, |n| disk.has(n))
            .expect("record");
        for name in names {
            disk.put(name);
        }
    }

    /// An upload with a session: written, then adopted (written again if missing).
    fn with_session(db: &mut Db, disk: &Disk, names: &[&str]) -> usize {
        for name in names {
            disk.put(name);
        }
        db.adopt_uploads(names, |n| {
            disk.put(n);
            Ok(())
        })
        .expect("adopt")
    }

    /// Sweeps everything before `cutoff` in batches of `batch`; returns the batches.
    fn sweep(db: &mut Db, disk: &Disk, cutoff: i64, batch: usize) -> Vec<SweepBatch> {
        let mut done = Vec::new();
        loop {
            let b = db
                .sweep_anonymous_uploads(cutoff, batch, |n| disk.take(n))
                .expect("sweep");
            done.push(b);
            if !b.more {
                return done;
            }
        }
    }

    #[test]
    fn unadopted_uploads_are_swept_with_their_thumbnails_after_the_cutoff_only() {
        let mut t = test_db();
        let disk = Disk::default();
        anonymous(&mut t.db, &disk, &["a.png", "a-thumb.jpg"], 0);
        anonymous(&mut t.db, &disk, &["b.png"], 10 * HOUR);
        assert_eq!(t.db.anonymous_upload_count().expect("count"), 3);
        // At 24 h, only what is older than the cutoff (0 + 1 ms) goes; b stays.
        let batches = sweep(&mut t.db, &disk, 1, 10);
        assert_eq!(
            batches,
            [SweepBatch {
                removed: 2,
                more: false
            }]
        );
        assert_eq!(disk.names(), ["b.png"]);
        assert_eq!(t.db.anonymous_upload_count().expect("count"), 1);
        // A row uploaded exactly at the cutoff stays; a millisecond later it goes.
        assert_eq!(sweep(&mut t.db, &disk, 10 * HOUR, 10)[0].removed, 0);
        assert_eq!(sweep(&mut t.db, &disk, 10 * HOUR + 1, 10)[0].removed, 1);
        assert!(disk.names().is_empty());
    }

    #[test]
    fn the_sweep_runs_in_batches_oldest_first() {
        let mut t = test_db();
        let disk = Disk::default();
        for i in 0..7 {
            anonymous(&mut t.db, &disk, &[&format!("{i}.png")], 100 - i);
        }
        let first =
            t.db.sweep_anonymous_uploads(1_000, 3, |n| disk.take(n))
                .expect("sweep");
        assert_eq!(
            first,
            SweepBatch {
                removed: 3,
                more: true
            }
        );
        // The three oldest (uploaded at 94, 95, 96) went first.
        assert_eq!(disk.names(), ["0.png", "1.png", "2.png", "3.png"]);
        let rest = sweep(&mut t.db, &disk, 1_000, 3);
        let removed: usize = rest.iter().map(|b| b.removed).sum();
        assert_eq!(removed, 4);
        assert_eq!(rest.last().map(|b| b.more), Some(false));
        assert!(disk.names().is_empty());
    }

    #[test]
    fn an_avatar_adopts_the_picture_and_its_thumbnail() {
        let mut t = test_db();
        let disk = Disk::default();
        anonymous(&mut t.db, &disk, &["a.png", "a-thumb.jpg"], 0);
        anonymous(&mut t.db, &disk, &["b.png", "b-thumb.jpg"], 0);
        // The avatar names the picture only.
        let adopted = t.db.adopt_uploads(&["a.png"], |_| Ok(())).expect("adopt");
        assert_eq!(adopted, 2);
        sweep(&mut t.db, &disk, HOUR, 10);
        assert_eq!(disk.names(), ["a-thumb.jpg", "a.png"]);
        // Adopting again, or something never recorded, changes nothing.
        assert_eq!(
            t.db.adopt_uploads(&["a.png", "zzz.png"], |_| Ok(()))
                .expect("adopt"),
            0
        );
    }

    #[test]
    fn a_file_stored_with_a_session_is_never_recorded_nor_swept() {
        let mut t = test_db();
        let disk = Disk::default();
        // Stored with a session first, then uploaded anonymously: not recorded.
        assert_eq!(with_session(&mut t.db, &disk, &["a.png", "a-thumb.jpg"]), 0);
        anonymous(&mut t.db, &disk, &["a.png", "a-thumb.jpg"], 0);
        assert_eq!(t.db.anonymous_upload_count().expect("count"), 0);
        // Anonymous first, then with a session: adopted.
        anonymous(&mut t.db, &disk, &["b.png", "b-thumb.jpg"], 0);
        assert_eq!(with_session(&mut t.db, &disk, &["b.png", "b-thumb.jpg"]), 2);
        // A new anonymous picture whose thumbnail an account already has: only the
        // picture is recorded.
        anonymous(&mut t.db, &disk, &["c.png", "a-thumb.jpg"], 0);
        assert_eq!(t.db.anonymous_upload_count().expect("count"), 1);
        sweep(&mut t.db, &disk, HOUR, 10);
        assert_eq!(
            disk.names(),
            ["a-thumb.jpg", "a.png", "b-thumb.jpg", "b.png"]
        );
    }

    #[test]
    fn an_upload_with_a_session_after_a_sweep_took_the_file_writes_it_again() {
        let mut t = test_db();
        let disk = Disk::default();
        anonymous(&mut t.db, &disk, &["a.png"], 0);
        // The upload with a session finds the file stored and keeps it...
        disk.put("a.png");
        // ...then the sweep removes it before the adoption...
        sweep(&mut t.db, &disk, HOUR, 10);
        assert!(!disk.has("a.png"));
        // ...and the adoption writes it again under the lock.
        t.db.adopt_uploads(&["a.png"], |n| {
            if !disk.has(n) {
                disk.put(n);
            }
            Ok(())
        })
        .expect("adopt");
        assert_eq!(disk.names(), ["a.png"]);
        // A failed write undoes the adoption: the row stays for the next attempt.
        anonymous(&mut t.db, &disk, &["b.png"], 0);
        let err =
            t.db.adopt_uploads(&["b.png"], |_| Err(std::io::Error::other("disk full")))
                .expect_err("the write failed");
        assert!(matches!(err, StoreError::Io(_)), "{err}");
        assert_eq!(t.db.anonymous_upload_count().expect("count"), 1);
    }

    #[test]
    fn uploading_again_anonymously_refreshes_the_time_never_backwards() {
        let mut t = test_db();
        let disk = Disk::default();
        anonymous(&mut t.db, &disk, &["a.png"], 0);
        anonymous(&mut t.db, &disk, &["a.png"], 20 * HOUR);
        // A clock that stepped back does not make it older.
        anonymous(&mut t.db, &disk, &["a.png"], 5 * HOUR);
        assert_eq!(sweep(&mut t.db, &disk, 20 * HOUR, 10)[0].removed, 0);
        assert_eq!(disk.names(), ["a.png"]);
        assert_eq!(sweep(&mut t.db, &disk, 20 * HOUR + 1, 10)[0].removed, 1);
        // Recorded even when the file is missing on disk while its row exists.
        anonymous(&mut t.db, &disk, &["b.png"], 0);
        disk.take("b.png");
        anonymous(&mut t.db, &disk, &["b.png"], HOUR);
        assert_eq!(t.db.anonymous_upload_count().expect("count"), 1);
        t.db.record_anonymous_upload(&[], 0, |_| false)
            .expect("nothing to record");
    }
}

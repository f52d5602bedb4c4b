//! Users: registration, login lookup, profile.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::{Db, Result, StoreError, taken_or};

/// A user as others may see it. The password hash is not part of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    /// Server-assigned id.
    pub id: i64,
    /// Mobile number: the login name, unique.
    pub mobile: String,
    /// Display name.
    pub nickname: String,
    /// Avatar image URL.
    pub avatar: String,
    /// fastIM's `M`, `W` or `U`.
    pub sex: String,
    /// Self-description.
    pub memo: String,
    /// Registration time, unix milliseconds.
    pub created_at: i64,
}

/// The fields of a new user. The caller validates them and hashes the password
/// ([`crate::secret::hash_password`]).
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// Mobile number (login name).
    pub mobile: String,
    /// PHC string of the password.
    pub password_hash: String,
    /// Display name.
    pub nickname: String,
    /// Avatar image URL.
    pub avatar: String,
    /// `M`, `W` or `U`.
    pub sex: String,
    /// Self-description (fastIM dropped it at registration; we keep it).
    pub memo: String,
}

/// A profile change: `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct ProfileUpdate {
    /// New display name.
    pub nickname: Option<String>,
    /// New avatar URL.
    pub avatar: Option<String>,
    /// New sex.
    pub sex: Option<String>,
    /// New self-description.
    pub memo: Option<String>,
}

/// What login needs of a user: the user, their password hash, and whether an
/// administrator blocked them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRow {
    /// The user.
    pub user: User,
    /// PHC string of the password.
    pub password_hash: String,
    /// Blocked users are refused after their password checked out.
    pub blocked: bool,
}

/// The columns [`user_from_row`] reads, for a `users` table aliased `u`.
pub(super) const USER_COLUMNS: &str =
    "u.id, u.mobile, u.nickname, u.avatar, u.sex, u.memo, u.created_at";

/// The same columns unqualified, for `RETURNING` clauses.
const USER_RETURNING: &str = "id, mobile, nickname, avatar, sex, memo, created_at";

/// Reads a [`User`] from the first seven columns of `row` (in [`USER_COLUMNS`] order).
pub(super) fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        mobile: row.get(1)?,
        nickname: row.get(2)?,
        avatar: row.get(3)?,
        sex: row.get(4)?,
        memo: row.get(5)?,
        created_at: row.get(6)?,
    })
}

impl Db {
    /// Registers a user.
    ///
    /// # Errors
    /// [`StoreError::MobileTaken`] if the mobile number is registered, decided by the UNIQUE
    /// index, so two concurrent registrations of one number cannot both succeed.
    pub fn create_user(&mut self, new: NewUser, now: i64) -> Result<User> {
        let sql = format!(
            "INSERT INTO users (mobile, password_hash, nickname, avatar, sex, memo, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             RETURNING {USER_RETURNING}"
        );
        self.conn
            .query_row(
                &sql,
                params![
                    new.mobile,
                    new.password_hash,
                    new.nickname,
                    new.avatar,
                    new.sex,
                    new.memo,
                    now
                ],
                user_from_row,
            )
            .map_err(taken_or(StoreError::MobileTaken))
    }

    /// The user with this id.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn user_by_id(&self, id: i64) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        Ok(stmt.query_row([id], user_from_row).optional()?)
    }

    /// The user with this mobile number (fastIM adds friends by mobile number).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn user_by_mobile(&self, mobile: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.mobile = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        Ok(stmt.query_row([mobile], user_from_row).optional()?)
    }

    /// The user with this mobile number and their password hash, for login.
    ///
    /// The only function that returns a password hash. To not tell an attacker which
    /// numbers are registered, a caller that gets `None` should still spend the time of one
    /// [`crate::secret::verify_password`] and answer as for a wrong password.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn user_login_row(&self, mobile: &str) -> Result<Option<LoginRow>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, u.password_hash, u.blocked FROM users u WHERE u.mobile = ?1"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        Ok(stmt
            .query_row([mobile], |row| {
                Ok(LoginRow {
                    user: user_from_row(row)?,
                    password_hash: row.get(7)?,
                    blocked: row.get(8)?,
                })
            })
            .optional()?)
    }

    /// Changes the given profile fields and returns the updated user.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`] if there is no user `id`.
    pub fn update_profile(&mut self, id: i64, update: ProfileUpdate) -> Result<User> {
        let sql = format!(
            "UPDATE users SET
                 nickname = coalesce(?2, nickname),
                 avatar = coalesce(?3, avatar),
                 sex = coalesce(?4, sex),
                 memo = coalesce(?5, memo)
             WHERE id = ?1
             RETURNING {USER_RETURNING}"
        );
        self.conn
            .query_row(
                &sql,
                params![id, update.nickname, update.avatar, update.sex, update.memo],
                user_from_row,
            )
            .optional()?
            .ok_or(StoreError::NoSuchUser)
    }

    /// When each user who has ever gone offline was last seen, unix ms: the chat
    /// server's presence at start.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn all_last_seen(&self) -> Result<Vec<(i64, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, last_seen FROM users WHERE last_seen > 0")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records when these users went offline, in one transaction. An unknown
    /// (deleted) user is skipped; an older time never replaces a newer one.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn set_last_seen(&mut self, seen: &[(i64, i64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let tx = self.write_tx()?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE users SET last_seen = ?2 WHERE id = ?1 AND last_seen < ?2",
            )?;
            for (user, at) in seen {
                update.execute(params![user, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Whether a user with this id exists (`conn` may be a transaction).
pub(super) fn user_exists(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
        .exists([id])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn new_user(mobile: &str) -> NewUser {
        NewUser {
            mobile: mobile.to_owned(),
            password_hash: "$argon2id$v=19$dummy".to_owned(),
            nickname: "Alice".to_owned(),
            avatar: "/resource/a.png".to_owned(),
            sex: "W".to_owned(),
            memo: "hello".to_owned(),
        }
    }

    #[test]
    fn create_and_read_back() {
        let mut t = test_db();
        let alice =
            t.db.create_user(new_user("13800000001"), 1_700_000_000_000)
                .expect("create");
        assert!(alice.id > 0);
        assert_eq!(alice.mobile, "13800000001");
        assert_eq!(alice.nickname, "Alice");
        assert_eq!(alice.avatar, "/resource/a.png");
        assert_eq!(alice.sex, "W");
        assert_eq!(alice.memo, "hello", "memo is kept, unlike fastIM");
        assert_eq!(alice.created_at, 1_700_000_000_000);
        assert_eq!(
            t.db.user_by_id(alice.id).expect("by id"),
            Some(alice.clone())
        );
        assert_eq!(
            t.db.user_by_mobile("13800000001").expect("by mobile"),
            Some(alice.clone())
        );
        assert_eq!(t.db.user_by_id(alice.id + 1).expect("missing"), None);
        assert_eq!(t.db.user_by_mobile("1").expect("missing"), None);
    }

    #[test]
    fn duplicate_mobile_is_refused() {
        let mut t = test_db();
        t.db.create_user(new_user("13800000001"), 1).expect("first");
        let err =
            t.db.create_user(new_user("13800000001"), 2)
                .expect_err("second");
        assert!(matches!(err, StoreError::MobileTaken), "{err:?}");
        t.db.create_user(new_user("13800000002"), 3)
            .expect("another number");
    }

    #[test]
    fn duplicate_mobile_from_two_connections() {
        let t = test_db();
        let path = t.path();
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut db = super::super::Db::open(&path).expect("open");
                    db.create_user(new_user("13800000009"), 1)
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::MobileTaken)))
        );
    }

    #[test]
    fn login_row_carries_the_hash_and_nothing_else_does() {
        let mut t = test_db();
        let alice =
            t.db.create_user(new_user("13800000001"), 1)
                .expect("create");
        let row =
            t.db.user_login_row("13800000001")
                .expect("query")
                .expect("found");
        assert_eq!(row.user, alice);
        assert_eq!(row.password_hash, "$argon2id$v=19$dummy");
        assert!(!row.blocked);
        assert_eq!(t.db.user_login_row("13800000002").expect("query"), None);
    }

    #[test]
    fn update_profile_changes_only_given_fields() {
        let mut t = test_db();
        let alice =
            t.db.create_user(new_user("13800000001"), 1)
                .expect("create");
        let updated =
            t.db.update_profile(
                alice.id,
                ProfileUpdate {
                    nickname: Some("Alicia".to_owned()),
                    memo: Some(String::new()),
                    ..ProfileUpdate::default()
                },
            )
            .expect("update");
        assert_eq!(updated.nickname, "Alicia");
        assert_eq!(updated.memo, "");
        assert_eq!(updated.avatar, alice.avatar);
        assert_eq!(updated.sex, alice.sex);
        assert_eq!(updated.mobile, alice.mobile);
        assert_eq!(t.db.user_by_id(alice.id).expect("read"), Some(updated));
        let row =
            t.db.user_login_row(&alice.mobile)
                .expect("query")
                .expect("found");
        assert_eq!(row.password_hash, "$argon2id$v=19$dummy", "hash untouched");

        let err =
            t.db.update_profile(alice.id + 100, ProfileUpdate::default())
                .expect_err("missing");
        assert!(matches!(err, StoreError::NoSuchUser), "{err:?}");
    }

    #[test]
    fn last_seen_is_kept_and_only_moves_forward() {
        let mut t = test_db();
        let a = t.db.create_user(new_user("13800000001"), 1).expect("a").id;
        let b = t.db.create_user(new_user("13800000002"), 1).expect("b").id;
        assert!(t.db.all_last_seen().expect("read").is_empty(), "never seen");
        t.db.set_last_seen(&[(a, 50), (b, 60), (999, 70)])
            .expect("set");
        t.db.set_last_seen(&[(a, 40)]).expect("older");
        let mut seen = t.db.all_last_seen().expect("read");
        seen.sort_unstable();
        assert_eq!(seen, [(a, 50), (b, 60)]);
    }
}

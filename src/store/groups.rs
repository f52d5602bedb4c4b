//! Groups (fastIM's "communities") and their members.
//!
//! Invariant: a group has exactly one owner, and the owner is a member (row role `owner`).
//! [`Db::create_group`] writes the group and the owner's membership in one transaction;
//! [`Db::leave_group`] keeps the invariant when the owner leaves, by handing the group to
//! the longest-standing member, or by deleting the group when nobody is left.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde::Serialize;

use super::users::{USER_COLUMNS, user_exists, user_from_row};
use super::{Db, Result, StoreError, User, taken_or};

/// A group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Server-assigned id.
    pub id: i64,
    /// Unique name (case-sensitive); users join by name.
    pub name: String,
    /// The owning user.
    pub owner_id: i64,
    /// Icon image URL.
    pub icon: String,
    /// fastIM's category: 0 default, 1 hobbies, 2 trade, 3 leisure, 4 study.
    pub cate: i64,
    /// Description.
    pub memo: String,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

/// The fields of a new group; the caller validates them.
#[derive(Clone, Debug, Default)]
pub struct NewGroup {
    /// Unique name.
    pub name: String,
    /// Icon image URL.
    pub icon: String,
    /// Category.
    pub cate: i64,
    /// Description.
    pub memo: String,
}

/// A member's role in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The one owner.
    Owner,
    /// Everyone else.
    Member,
}

impl Role {
    /// The value in the `role` column.
    fn as_sql(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    /// Parses the `role` column (the table's CHECK allows only these two).
    fn from_sql(s: &str) -> rusqlite::Result<Role> {
        match s {
            "owner" => Ok(Role::Owner),
            "member" => Ok(Role::Member),
            other => Err(rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("unknown role {other:?}").into(),
            )),
        }
    }
}

/// A member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The user.
    pub user: User,
    /// Their role.
    pub role: Role,
    /// When they joined, unix milliseconds.
    pub joined_at: i64,
}

/// What [`Db::leave_group`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveOutcome {
    /// A member left; nothing else changed.
    Left,
    /// The owner left and `new_owner`, the member who joined first, now owns the group.
    OwnershipTransferred {
        /// The new owner's user id.
        new_owner: i64,
    },
    /// The owner was the last member: the group and its messages are deleted.
    GroupDeleted,
}

/// The columns [`group_from_row`] reads, for a `chat_groups` table aliased `g`.
pub(super) const GROUP_COLUMNS: &str =
    "g.id, g.name, g.owner_id, g.icon, g.cate, g.memo, g.created_at";
/// The same columns unqualified, for `RETURNING` clauses.
const GROUP_RETURNING: &str = "id, name, owner_id, icon, cate, memo, created_at";

/// Reads a [`Group`] from the first seven columns of `row`.
pub(super) fn group_from_row(row: &Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        id: row.get(0)?,
        name: row.get(1)?,
        owner_id: row.get(2)?,
        icon: row.get(3)?,
        cate: row.get(4)?,
        memo: row.get(5)?,
        created_at: row.get(6)?,
    })
}

/// Whether group `id` exists.
fn group_exists(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM chat_groups WHERE id = ?1")?
        .exists([id])
}

/// `user`'s role in `group`, or `None` if not a member.
fn role_of(conn: &Connection, group: i64, user: i64) -> rusqlite::Result<Option<Role>> {
    conn.prepare_cached("SELECT role FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
        .query_row([group, user], |row| {
            Role::from_sql(&row.get::<_, String>(0)?)
        })
        .optional()
}

/// Adds `user` to `group` with `role`; their join point is the newest message id now.
///
/// Runs inside a write transaction, so no message can commit between reading the newest id
/// and inserting the row: every later message has a larger id.
fn insert_member(tx: &Transaction<'_>, group: i64, user: i64, role: Role, now: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO group_members (group_id, user_id, role, joined_at, join_msg_id)
         VALUES (?1, ?2, ?3, ?4, (SELECT coalesce(max(id), 0) FROM messages))",
    )?
    .execute(params![group, user, role.as_sql(), now])
    .map_err(taken_or(StoreError::AlreadyMember))?;
    Ok(())
}

/// [`Db::join_group`] inside the caller's write transaction.
pub(super) fn join_in(tx: &Transaction<'_>, user: i64, group: i64, now: i64) -> Result<()> {
    if !group_exists(tx, group)? {
        return Err(StoreError::NoSuchGroup);
    }
    if !user_exists(tx, user)? {
        return Err(StoreError::NoSuchUser);
    }
    insert_member(tx, group, user, Role::Member, now)
}

/// [`Db::leave_group`] inside the caller's write transaction (also used when a user is
/// deleted).
pub(super) fn leave_in(tx: &Transaction<'_>, user: i64, group: i64) -> Result<LeaveOutcome> {
    if !group_exists(tx, group)? {
        return Err(StoreError::NoSuchGroup);
    }
    let outcome = match role_of(tx, group, user)? {
        None => return Err(StoreError::NotMember),
        Some(Role::Member) => LeaveOutcome::Left,
        Some(Role::Owner) => {
            let heir: Option<i64> = tx
                .prepare_cached(
                    "SELECT user_id FROM group_members
                     WHERE group_id = ?1 AND user_id <> ?2
                     ORDER BY joined_at, join_msg_id, user_id
                     LIMIT 1",
                )?
                .query_row([group, user], |row| row.get(0))
                .optional()?;
            match heir {
                Some(heir) => {
                    tx.prepare_cached(
                        "UPDATE group_members SET role = 'owner'
                         WHERE group_id = ?1 AND user_id = ?2",
                    )?
                    .execute([group, heir])?;
                    tx.prepare_cached("UPDATE chat_groups SET owner_id = ?2 WHERE id = ?1")?
                        .execute([group, heir])?;
                    LeaveOutcome::OwnershipTransferred { new_owner: heir }
                }
                None => {
                    tx.prepare_cached("DELETE FROM messages WHERE cmd = 11 AND dst_id = ?1")?
                        .execute([group])?;
                    tx.prepare_cached("DELETE FROM read_markers WHERE cmd = 11 AND dst_id = ?1")?
                        .execute([group])?;
                    // Cascades to the last membership row.
                    tx.prepare_cached("DELETE FROM chat_groups WHERE id = ?1")?
                        .execute([group])?;
                    LeaveOutcome::GroupDeleted
                }
            }
        }
    };
    if outcome != LeaveOutcome::GroupDeleted {
        tx.prepare_cached("DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
            .execute([group, user])?;
    }
    Ok(outcome)
}

impl Db {
    /// Creates a group owned by `owner`, who becomes its first member, in one transaction.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`]; [`StoreError::TooManyGroups`] if `owner` already owns
    /// `max_owned` groups (fastIM's check let a sixth through); [`StoreError::GroupNameTaken`]
    /// if the exact name exists (decided by the UNIQUE index).
    pub fn create_group(
        &mut self,
        owner: i64,
        new: NewGroup,
        max_owned: usize,
        now: i64,
    ) -> Result<Group> {
        let tx = self.write_tx()?;
        if !user_exists(&tx, owner)? {
            return Err(StoreError::NoSuchUser);
        }
        let owned: i64 = tx
            .prepare_cached("SELECT count(*) FROM chat_groups WHERE owner_id = ?1")?
            .query_row([owner], |row| row.get(0))?;
        if usize::try_from(owned).unwrap_or(usize::MAX) >= max_owned {
            return Err(StoreError::TooManyGroups { max: max_owned });
        }
        let sql = format!(
            "INSERT INTO chat_groups (name, owner_id, icon, cate, memo, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             RETURNING {GROUP_RETURNING}"
        );
        let group = tx
            .query_row(
                &sql,
                params![new.name, owner, new.icon, new.cate, new.memo, now],
                group_from_row,
            )
            .map_err(taken_or(StoreError::GroupNameTaken))?;
        insert_member(&tx, group.id, owner, Role::Owner, now)?;
        tx.commit()?;
        Ok(group)
    }

    /// The group with this id.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn group_by_id(&self, id: i64) -> Result<Option<Group>> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM chat_groups g WHERE g.id = ?1");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([id], group_from_row)
            .optional()?)
    }

    /// The group with exactly this name (case-sensitive).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn group_by_name(&self, name: &str) -> Result<Option<Group>> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM chat_groups g WHERE g.name = ?1");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([name], group_from_row)
            .optional()?)
    }

    /// Adds `user` to `group` as a plain member.
    ///
    /// The member receives the group's messages sent from now on (see
    /// [`Db::messages_for`]), not the earlier ones.
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`], [`StoreError::NoSuchUser`],
    /// [`StoreError::AlreadyMember`].
    pub fn join_group(&mut self, user: i64, group: i64, now: i64) -> Result<()> {
        let tx = self.write_tx()?;
        join_in(&tx, user, group, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes `user` from `group`.
    ///
    /// When the owner leaves, the group passes to the member who joined first (earliest
    /// `joined_at`, then earliest join point, then smallest user id). The new owner may then
    /// own more groups than the creation limit allows; the limit is checked only at creation.
    /// When the owner is the last member, the group is deleted with its messages.
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`], [`StoreError::NotMember`].
    pub fn leave_group(&mut self, user: i64, group: i64) -> Result<LeaveOutcome> {
        let tx = self.write_tx()?;
        let outcome = leave_in(&tx, user, group)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// The groups `user` is a member of, by group id.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn groups_of(&self, user: i64) -> Result<Vec<Group>> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM group_members m JOIN chat_groups g ON g.id = m.group_id
             WHERE m.user_id = ?1
             ORDER BY m.group_id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([user], group_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The members of `group`, in the order they joined (the owner first unless ownership
    /// was transferred).
    ///
    /// # Errors
    /// [`StoreError::NoSuchGroup`].
    pub fn members(&self, group: i64) -> Result<Vec<Member>> {
        if !group_exists(&self.conn, group)? {
            return Err(StoreError::NoSuchGroup);
        }
        let sql = format!(
            "SELECT {USER_COLUMNS}, m.role, m.joined_at
             FROM group_members m JOIN users u ON u.id = m.user_id
             WHERE m.group_id = ?1
             ORDER BY m.joined_at, m.join_msg_id, m.user_id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([group], |row| {
            Ok(Member {
                user: user_from_row(row)?,
                role: Role::from_sql(&row.get::<_, String>(7)?)?,
                joined_at: row.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether `user` is a member of `group` (note the argument order: group first).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn is_member(&self, group: i64, user: i64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
            .exists([group, user])?)
    }

    /// Every `(group_id, user_id)` membership, sorted: for the server's in-memory
    /// group → members index at start-up.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] only.
    pub fn all_memberships(&self) -> Result<Vec<(i64, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT group_id, user_id FROM group_members ORDER BY group_id, user_id")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn new_group(name: &str) -> NewGroup {
        NewGroup {
            name: name.to_owned(),
            icon: "/resource/g.png".to_owned(),
            cate: 2,
            memo: "about".to_owned(),
        }
    }

    #[test]
    fn owner_is_a_member_with_role_owner() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0);
        let g =
            t.db.create_group(a.id, new_group("rust"), 5, 100)
                .expect("create");
        assert_eq!(
            (
                g.name.as_str(),
                g.owner_id,
                g.icon.as_str(),
                g.cate,
                g.memo.as_str()
            ),
            ("rust", a.id, "/resource/g.png", 2, "about")
        );
        assert_eq!(g.created_at, 100);
        assert_eq!(t.db.group_by_id(g.id).expect("q"), Some(g.clone()));
        assert_eq!(t.db.group_by_name("rust").expect("q"), Some(g.clone()));
        assert!(t.db.is_member(g.id, a.id).expect("q"));
        assert_eq!(
            t.db.members(g.id).expect("q"),
            [Member {
                user: a.clone(),
                role: Role::Owner,
                joined_at: 100
            }]
        );
        assert_eq!(t.db.groups_of(a.id).expect("q"), [g]);
    }

    #[test]
    fn owner_limit_counts_owned_groups_only() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0);
        let b = user(&mut t.db, "13800000002", 0);
        for i in 0..5 {
            t.db.create_group(a.id, new_group(&format!("g{i}")), 5, 0)
                .expect("within limit");
        }
        let err =
            t.db.create_group(a.id, new_group("g5"), 5, 0)
                .expect_err("sixth");
        assert!(
            matches!(err, StoreError::TooManyGroups { max: 5 }),
            "{err:?}"
        );
        assert_eq!(
            t.db.group_by_name("g5").expect("q"),
            None,
            "nothing written"
        );

        // Membership in others' groups does not count.
        let bg = t.db.create_group(b.id, new_group("b's"), 5, 0).expect("b");
        t.db.join_group(a.id, bg.id, 0).expect("join");
        assert_eq!(t.db.groups_of(a.id).expect("q").len(), 6);

        // A limit of zero forbids creation.
        assert!(matches!(
            t.db.create_group(b.id, new_group("zero"), 0, 0),
            Err(StoreError::TooManyGroups { max: 0 })
        ));
    }

    #[test]
    fn names_are_unique_and_case_sensitive() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0);
        let b = user(&mut t.db, "13800000002", 0);
        let g =
            t.db.create_group(a.id, new_group("Rust"), 5, 0)
                .expect("create");
        let err =
            t.db.create_group(b.id, new_group("Rust"), 5, 0)
                .expect_err("taken");
        assert!(matches!(err, StoreError::GroupNameTaken), "{err:?}");
        assert!(t.db.groups_of(b.id).expect("q").is_empty(), "rolled back");
        let lower =
            t.db.create_group(b.id, new_group("rust"), 5, 0)
                .expect("other case");
        assert_ne!(lower.id, g.id);
        assert_eq!(t.db.group_by_name("Rust").expect("q"), Some(g));
        assert_eq!(t.db.group_by_name("rust").expect("q"), Some(lower));
        assert_eq!(t.db.group_by_name("RUST").expect("q"), None);
    }

    #[test]
    fn create_group_needs_an_owner() {
        let mut t = test_db();
        assert!(matches!(
            t.db.create_group(7, new_group("x"), 5, 0),
            Err(StoreError::NoSuchUser)
        ));
    }

    #[test]
    fn join_and_leave() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0);
        let b = user(&mut t.db, "13800000002", 0);
        let g = t.db.create_group(a.id, new_group("g"), 5, 0).expect("g");
        t.db.join_group(b.id, g.id, 5).expect("join");
        assert!(t.db.is_member(g.id, b.id).expect("q"));
        assert!(matches!(
            t.db.join_group(b.id, g.id, 6),
            Err(StoreError::AlreadyMember)
        ));
        assert!(matches!(
            t.db.join_group(a.id, g.id, 6),
            Err(StoreError::AlreadyMember)
        ));
        assert!(matches!(
            t.db.join_group(b.id, g.id + 1, 6),
            Err(StoreError::NoSuchGroup)
        ));
        assert!(matches!(
            t.db.join_group(999, g.id, 6),
            Err(StoreError::NoSuchUser)
        ));
        let roles: Vec<_> =
            t.db.members(g.id)
                .expect("q")
                .into_iter()
                .map(|m| (m.user.id, m.role))
                .collect();
        assert_eq!(roles, [(a.id, Role::Owner), (b.id, Role::Member)]);
        assert_eq!(
            t.db.all_memberships().expect("q"),
            [(g.id, a.id), (g.id, b.id)]
        );

        assert_eq!(
            t.db.leave_group(b.id, g.id).expect("leave"),
            LeaveOutcome::Left
        );
        assert!(!t.db.is_member(g.id, b.id).expect("q"));
        assert!(matches!(
            t.db.leave_group(b.id, g.id),
            Err(StoreError::NotMember)
        ));
        assert!(matches!(
            t.db.leave_group(b.id, g.id + 1),
            Err(StoreError::NoSuchGroup)
        ));
        // Rejoining works.
        t.db.join_group(b.id, g.id, 7).expect("rejoin");
        assert!(t.db.is_member(g.id, b.id).expect("q"));
    }

    #[test]
    fn owner_leaving_hands_over_to_the_earliest_member() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0);
        let b = user(&mut t.db, "13800000002", 0);
        let c = user(&mut t.db, "13800000003", 0);
        let g = t.db.create_group(a.id, new_group("g"), 5, 0).expect("g");
        t.db.join_group(c.id, g.id, 10).expect("c first");
        t.db.join_group(b.id, g.id, 20).expect("b second");

        assert_eq!(
            t.db.leave_group(a.id, g.id).expect("owner leaves"),
            LeaveOutcome::OwnershipTransferred { new_owner: c.id }
        );
        let group = t.db.group_by_id(g.id).expect("q").expect("still there");
        assert_eq!(group.owner_id, c.id);
        let roles: Vec<_> =
            t.db.members(g.id)
                .expect("q")
                .into_iter()
                .map(|m| (m.user.id, m.role))
                .collect();
        assert_eq!(roles, [(c.id, Role::Owner), (b.id, Role::Member)]);

        assert_eq!(
            t.db.leave_group(c.id, g.id).expect("c leaves"),
            LeaveOutcome::OwnershipTransferred { new_owner: b.id }
        );
        assert_eq!(
            t.db.leave_group(b.id, g.id).expect("last leaves"),
            LeaveOutcome::GroupDeleted
        );
        assert_eq!(t.db.group_by_id(g.id).expect("q"), None);
        assert!(matches!(t.db.members(g.id), Err(StoreError::NoSuchGroup)));
        assert!(t.db.all_memberships().expect("q").is_empty());
        // The name is free again, and a's count of owned groups went down.
        t.db.create_group(a.id, new_group("g"), 1, 30)
            .expect("name reusable");
    }

    #[test]
    fn groups_of_lists_memberships_in_id_order() {
        let mut t = test_db();
        let a = user(&mut t.db, "13800000001", 0);
        let b = user(&mut t.db, "13800000002", 0);
        let g1 = t.db.create_group(b.id, new_group("one"), 5, 0).expect("1");
        let g2 = t.db.create_group(a.id, new_group("two"), 5, 0).expect("2");
        let _g3 =
            t.db.create_group(b.id, new_group("three"), 5, 0)
                .expect("3");
        t.db.join_group(a.id, g1.id, 0).expect("join");
        assert_eq!(t.db.groups_of(a.id).expect("q"), [g1, g2]);
        assert!(t.db.groups_of(999).expect("q").is_empty());
    }
}

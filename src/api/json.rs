//! The JSON shapes of replies, with fastIM's field names.
//!
//! The store's types are not serialized directly: these views decide, field by field, what
//! leaves the server. Nothing here can hold a password hash, and only [`OwnProfile`] can
//! hold a token (the caller's own, on register and login).

use serde::Serialize;

use crate::store::{Group, Member, Role, User};

/// What anyone logged in may see of another user (no mobile number, no token).
#[derive(Debug, Serialize)]
pub(super) struct PublicProfile<'a> {
    id: i64,
    nickname: &'a str,
    avatar: &'a str,
    sex: &'a str,
    memo: &'a str,
}

impl<'a> From<&'a User> for PublicProfile<'a> {
    fn from(u: &'a User) -> Self {
        PublicProfile {
            id: u.id,
            nickname: &u.nickname,
            avatar: &u.avatar,
            sex: &u.sex,
            memo: &u.memo,
        }
    }
}

/// A user's own profile (`/user/me`, `/user/update`, and with `token` on register and
/// login).
#[derive(Debug, Serialize)]
pub(super) struct OwnProfile<'a> {
    id: i64,
    mobile: &'a str,
    avatar: &'a str,
    sex: &'a str,
    nickname: &'a str,
    memo: &'a str,
    createat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

impl<'a> OwnProfile<'a> {
    /// The profile of `u`, with the session token just created for them, if any.
    pub(super) fn new(u: &'a User, token: Option<&'a str>) -> Self {
        OwnProfile {
            id: u.id,
            mobile: &u.mobile,
            avatar: &u.avatar,
            sex: &u.sex,
            nickname: &u.nickname,
            memo: &u.memo,
            createat: u.created_at,
            token,
        }
    }
}

/// fastIM's Community.
#[derive(Debug, Serialize)]
pub(super) struct Community<'a> {
    id: i64,
    name: &'a str,
    ownerid: i64,
    icon: &'a str,
    cate: i64,
    memo: &'a str,
    createat: i64,
}

impl<'a> From<&'a Group> for Community<'a> {
    fn from(g: &'a Group) -> Self {
        Community {
            id: g.id,
            name: &g.name,
            ownerid: g.owner_id,
            icon: &g.icon,
            cate: g.cate,
            memo: &g.memo,
            createat: g.created_at,
        }
    }
}

/// A row of `/contact/members`: the public profile and the role.
#[derive(Debug, Serialize)]
pub(super) struct MemberRow<'a> {
    #[serde(flatten)]
    user: PublicProfile<'a>,
    role: Role,
    /// The member's read marker in the group (0: nothing read), for "seen by N".
    pub(super) read: i64,
}

impl<'a> From<&'a Member> for MemberRow<'a> {
    fn from(m: &'a Member) -> Self {
        MemberRow {
            user: PublicProfile::from(&m.user),
            role: m.role,
            read: 0,
        }
    }
}

/// A row of `/contact/loadfriend` or `/contact/loadcommunity` with the caller's
/// unread count in that conversation (a field fastim adds).
#[derive(Debug, Serialize)]
pub(super) struct WithUnread<T> {
    #[serde(flatten)]
    pub(super) row: T,
    pub(super) unread: i64,
}

/// `{"code":0,"msg":"..","data":..}`.
#[derive(Debug, Serialize)]
pub(super) struct DataEnvelope<'a, T> {
    pub(super) code: i32,
    pub(super) msg: &'a str,
    pub(super) data: T,
}

/// `{"code":0,"msg":"","rows":[..],"total":n}` (and `"oldest":id` for history).
#[derive(Debug, Serialize)]
pub(super) struct RowsEnvelope<'a, T> {
    pub(super) code: i32,
    pub(super) msg: &'a str,
    pub(super) rows: &'a [T],
    pub(super) total: usize,
    /// `/message/history` only: where history starts (see `Db::history_start`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) oldest: Option<i64>,
}

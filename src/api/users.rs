//! `/user/*`: register, login, logout, own profile, public profiles.

use std::sync::OnceLock;

use super::fields::{self, Fields};
use super::json::{OwnProfile, PublicProfile};
use super::{
    ApiReply, Caller, Effect, Failure, MSG_SESSION_INVALID, SESSION_TTL_MS, clear_session_cookie,
    session_cookie,
};
use crate::im::events::ContactEvent;
use crate::secret::{hash_password, new_token, token_digest, verify_password};
use crate::store::{Db, NewUser, ProfileUpdate, StoreError, User};

/// Longest nickname, in characters.
pub const NICKNAME_MAX: usize = 20;
/// Longest avatar URL, in characters.
pub(super) const AVATAR_MAX: usize = 250;
/// Longest user memo, in characters.
pub(super) const USER_MEMO_MAX: usize = 140;

/// The one answer to a failed login, whether the number is unknown or the password wrong
/// (fastIM told them apart, FASTIM.md §1.2).
pub(super) const MSG_BAD_LOGIN: &str = "wrong mobile number or password";
/// The answer when registering a taken number.
pub(super) const MSG_MOBILE_TAKEN: &str = "this mobile number is already registered";
/// The answer to a right password for an account an administrator blocked
/// (`fastim admin user block`). Given only after the password checked out, so it tells
/// nothing to someone guessing.
pub const MSG_BLOCKED: &str = "this account is blocked";

/// `/user/register`: validates, stores the user with an Argon2id hash, and logs them in.
pub(super) fn register(
    db: &mut Db,
    fields: &Fields,
    now: i64,
    secure: bool,
) -> Result<ApiReply, Failure> {
    let mobile = fields::mobile(fields)?;
    let passwd = fields::new_password(fields, &mobile)?;
    let nickname = fields::required_name(fields, "nickname", NICKNAME_MAX)?;
    let avatar = fields::text_at_most(fields, "avatar", AVATAR_MAX)?.unwrap_or_default();
    let sex = fields::sex(fields)?.unwrap_or_else(|| "U".to_owned());
    let memo = fields::text_at_most(fields, "memo", USER_MEMO_MAX)?.unwrap_or_default();
    // Spares the hash for the common case; the UNIQUE index decides races.
    if db.user_by_mobile(&mobile)?.is_some() {
        return Err(Failure::App(MSG_MOBILE_TAKEN.to_owned()));
    }
    let new = NewUser {
        mobile,
        password_hash: hash_password(&passwd),
        nickname,
        avatar,
        sex,
        memo,
    };
    let user = db.create_user(new, now).map_err(|e| match e {
        StoreError::MobileTaken => Failure::App(MSG_MOBILE_TAKEN.to_owned()),
        other => other.into(),
    })?;
    adopt_avatar(db, &user.avatar);
    start_session(db, &user, now, secure)
}

/// An avatar uploaded without a session (fastIM's register page uploads it before the
/// account exists) now belongs to an account: it is no longer removed after a day. A
/// failure is logged, not answered: the account is made, and the worst case is an
/// avatar that disappears a day later.
fn adopt_avatar(db: &mut Db, avatar: &str) {
    let Some(name) = crate::resource::name_in_url(avatar) else {
        return;
    };
    if let Err(e) = db.adopt_uploads(&[name], |_| Ok(())) {
        log::error!("api: keeping avatar {name}: {e}");
    }
}

/// A password hash that nothing matches, verified against when the mobile number is
/// unknown so that such a login takes as long as one with a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no user has this password hash"))
}

/// `/user/login`: checks the password and starts a new session.
pub(super) fn login(
    db: &mut Db,
    fields: &Fields,
    now: i64,
    secure: bool,
) -> Result<ApiReply, Failure> {
    let mobile = fields
        .trimmed("mobile")?
        .ok_or_else(|| Failure::field("mobile is required"))?;
    let passwd = fields
        .text("passwd")?
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Failure::field("passwd is required"))?;
    match db.user_login_row(mobile)? {
        Some(row) if verify_password(passwd, &row.password_hash) => {
            if row.blocked {
                return Err(Failure::App(MSG_BLOCKED.to_owned()));
            }
            start_session(db, &row.user, now, secure)
        }
        Some(_) => Err(Failure::App(MSG_BAD_LOGIN.to_owned())),
        None => {
            let _ = verify_password(passwd, dummy_hash());
            Err(Failure::App(MSG_BAD_LOGIN.to_owned()))
        }
    }
}

/// Creates a session for `user` and answers with their profile, the token and the cookie
/// (`Secure` if `secure`).
fn start_session(db: &mut Db, user: &User, now: i64, secure: bool) -> Result<ApiReply, Failure> {
    let token = new_token();
    db.create_session(
        user.id,
        token_digest(&token),
        now.saturating_add(SESSION_TTL_MS),
    )?;
    Ok(ApiReply::data(OwnProfile::new(user, Some(&token)))
        .with_cookie(session_cookie(&token, secure)))
}

/// `/user/logout`: ends the caller's session (only that one) and clears the cookie.
pub(super) fn logout(db: &mut Db, caller: &Caller<'_>, secure: bool) -> Result<ApiReply, Failure> {
    let digest = token_digest(caller.token);
    db.delete_session(digest)?;
    Ok(ApiReply::done("logged out")
        .with_cookie(clear_session_cookie(secure))
        .with_effect(Effect::LoggedOut {
            user: caller.id,
            token_digest: digest,
        }))
}

/// The caller's user row; a session whose user is gone counts as no session.
fn own_user(db: &Db, caller: &Caller<'_>) -> Result<User, Failure> {
    db.user_by_id(caller.id)?
        .ok_or(Failure::Unauthorized(MSG_SESSION_INVALID))
}

/// `/user/me`: the caller's own profile.
pub(super) fn me(db: &Db, caller: &Caller<'_>) -> Result<ApiReply, Failure> {
    let user = own_user(db, caller)?;
    Ok(ApiReply::data(OwnProfile::new(&user, None)))
}

/// `/user/find`: the public profile of user `id`, or a 404 (fastIM's client reads
/// `data` of any 200, FASTIM.md §1.9 item 16).
pub(super) fn find(db: &Db, fields: &Fields) -> Result<ApiReply, Failure> {
    let id = fields.required_int("id")?;
    let user = db
        .user_by_id(id)?
        .ok_or(Failure::NotFound("no such user"))?;
    Ok(ApiReply::data(PublicProfile::from(&user)))
}

/// `/user/update`: changes the given profile fields; mobile and password stay.
pub(super) fn update(
    db: &mut Db,
    caller: &Caller<'_>,
    fields: &Fields,
) -> Result<ApiReply, Failure> {
    let nickname = fields::name(fields, "nickname", NICKNAME_MAX)?;
    if nickname.is_none() && fields.text("nickname")?.is_some() {
        return Err(Failure::field(format!(
            "nickname must be 1 to {NICKNAME_MAX} characters"
        )));
    }
    let update = ProfileUpdate {
        nickname,
        avatar: fields::text_at_most(fields, "avatar", AVATAR_MAX)?,
        sex: fields::sex(fields)?,
        memo: fields::text_at_most(fields, "memo", USER_MEMO_MAX)?,
    };
    let new_avatar = update.avatar.clone();
    let user = db.update_profile(caller.id, update).map_err(|e| match e {
        StoreError::NoSuchUser => Failure::Unauthorized(MSG_SESSION_INVALID),
        other => other.into(),
    })?;
    if let Some(avatar) = new_avatar {
        adopt_avatar(db, &avatar);
    }
    // Friends and fellow members see the new name and picture at once.
    let event = ContactEvent::ProfileUpdated {
        user: super::friends::profile(&user),
    };
    Ok(
        ApiReply::data(OwnProfile::new(&user, None)).with_effect(Effect::NotifyContacts {
            user: user.id,
            event,
        }),
    )
}

//! The HTTP API: fastIM's `/user/*`, `/contact/*` and `/message/history` routes.
//!
//! The event loop parses the request head, picks the [`Route`] (404/405 are its own),
//! reads the body (413 over the limit), takes the session token from the request, and
//! hands an [`ApiRequest`] to a worker thread that owns a [`Db`]. There [`handle`] runs
//! the request to the end and returns an [`ApiReply`]: status, JSON body, optional
//! `Set-Cookie`, and the [`Effect`]s the loop applies to its in-memory indexes (among
//! them `cmd 30` events for other users' sockets, [`Effect::Notify`]).
//!
//! # Envelopes
//!
//! | case | HTTP | body |
//! |---|---|---|
//! | success with data | 200 | `{"code":0,"msg":"","data":…}` |
//! | success with a list | 200 | `{"code":0,"msg":"","rows":[…],"total":n}` |
//! | success without data | 200 | `{"code":0,"msg":"friend added"}` |
//! | application failure | 200 | `{"code":-1,"msg":"passwd must be 8 to 128 characters"}` |
//! | body not parseable | 400 | `{"code":400,"msg":"…"}` |
//! | no, unknown or expired token | 401 | `{"code":401,"msg":"…"}` |
//! | `/user/find` of an unknown id | 404 | `{"code":404,"msg":"no such user"}` |
//! | database failure | 500 | `{"code":500,"msg":"internal error"}` |
//!
//! fastIM's web client shows `msg` only for an HTTP 200, so everything a person can fix
//! (a field, a wrong password, a taken name) is a 200 with `code` -1.
//!
//! # Identity
//!
//! The user is always the owner of the session token, never the `userid` or `ownerid`
//! that fastIM's client still sends (those fields are ignored; FASTIM.md §1.9 item 7).

mod contacts;
mod fields;
mod friends;
mod groups;
mod history;
mod json;
mod upload;
mod users;

#[cfg(test)]
mod tests;

pub use fields::{check_mobile, check_new_password, check_nickname};
pub use friends::{MAX_PENDING_REQUESTS, MSG_REQUEST_SENT};
pub use groups::GroupChange;
pub use upload::{ANONYMOUS_UPLOAD_KEEP_MS, ANONYMOUS_UPLOAD_MAX, Upload, mib, upload};
pub use users::{MSG_BLOCKED, NICKNAME_MAX};

use serde::Serialize;

use crate::http::Status;
use crate::im::events::ContactEvent;
use crate::secret::token_digest;
use crate::store::{Db, StoreError};
use fields::Fields;
use json::{DataEnvelope, RowsEnvelope};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "fastim_token";
/// How long a session lasts after login or registration: 30 days, in milliseconds.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;
/// Most groups one user may own (fastIM meant 5 and allowed 6, FASTIM.md §1.9 item 18).
pub const MAX_GROUPS_OWNED: usize = 5;

/// Default page size of `/message/history`.
pub const HISTORY_DEFAULT_LIMIT: usize = 50;
/// Largest page size of `/message/history`; larger requests are cut to this.
pub const HISTORY_MAX_LIMIT: usize = 200;

/// An API route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/user/register`: create an account and log in.
    Register,
    /// `/user/login`: start a session.
    Login,
    /// `/user/logout`: end the current session.
    Logout,
    /// `/user/me`: own profile.
    Me,
    /// `/user/find`: someone's public profile by id.
    Find,
    /// `/user/update`: change own profile.
    UpdateProfile,
    /// `/contact/addfriend`: ask a user (by mobile number or id) to be friends.
    AddFriend,
    /// `/contact/requests`: friend requests waiting, incoming and outgoing.
    Requests,
    /// `/contact/accept`: accept a friend request.
    Accept,
    /// `/contact/decline`: decline a friend request.
    Decline,
    /// `/contact/cancelrequest`: withdraw one's own friend request.
    CancelRequest,
    /// `/contact/removefriend`: end a friendship.
    RemoveFriend,
    /// `/contact/block`: block a user.
    Block,
    /// `/contact/unblock`: lift a block.
    Unblock,
    /// `/contact/blocked`: the users one blocked.
    Blocked,
    /// `/contact/loadfriend`: list friends.
    LoadFriends,
    /// `/contact/createcommunity`: create a group.
    CreateGroup,
    /// `/contact/joincommunity`: join a group by name or id.
    JoinGroup,
    /// `/contact/leavecommunity`: leave a group.
    LeaveGroup,
    /// `/contact/loadcommunity`: list own groups.
    LoadGroups,
    /// `/contact/members`: list a group's members.
    GroupMembers,
    /// `/contact/updatecommunity`: the owner renames a group or changes its icon or memo.
    UpdateGroup,
    /// `/contact/removemember`: the owner removes a member.
    RemoveMember,
    /// `/contact/transfercommunity`: the owner hands the group to another member.
    TransferGroup,
    /// `/contact/conversations`: friends and groups by last activity, with unread counts.
    Conversations,
    /// `/message/history`: a page of a conversation.
    History,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 26] = [
        Route::Register,
        Route::Login,
        Route::Logout,
        Route::Me,
        Route::Find,
        Route::UpdateProfile,
        Route::AddFriend,
        Route::Requests,
        Route::Accept,
        Route::Decline,
        Route::CancelRequest,
        Route::RemoveFriend,
        Route::Block,
        Route::Unblock,
        Route::Blocked,
        Route::LoadFriends,
        Route::CreateGroup,
        Route::JoinGroup,
        Route::LeaveGroup,
        Route::LoadGroups,
        Route::GroupMembers,
        Route::UpdateGroup,
        Route::RemoveMember,
        Route::TransferGroup,
        Route::Conversations,
        Route::History,
    ];

    /// The route at `path` (exact match, no query), if any.
    pub fn from_path(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.path() == path)
    }

    /// The route's path.
    pub fn path(self) -> &'static str {
        match self {
            Route::Register => "/user/register",
            Route::Login => "/user/login",
            Route::Logout => "/user/logout",
            Route::Me => "/user/me",
            Route::Find => "/user/find",
            Route::UpdateProfile => "/user/update",
            Route::AddFriend => "/contact/addfriend",
            Route::Requests => "/contact/requests",
            Route::Accept => "/contact/accept",
            Route::Decline => "/contact/decline",
            Route::CancelRequest => "/contact/cancelrequest",
            Route::RemoveFriend => "/contact/removefriend",
            Route::Block => "/contact/block",
            Route::Unblock => "/contact/unblock",
            Route::Blocked => "/contact/blocked",
            Route::LoadFriends => "/contact/loadfriend",
            Route::CreateGroup => "/contact/createcommunity",
            Route::JoinGroup => "/contact/joincommunity",
            Route::LeaveGroup => "/contact/leavecommunity",
            Route::LoadGroups => "/contact/loadcommunity",
            Route::GroupMembers => "/contact/members",
            Route::UpdateGroup => "/contact/updatecommunity",
            Route::RemoveMember => "/contact/removemember",
            Route::TransferGroup => "/contact/transfercommunity",
            Route::Conversations => "/contact/conversations",
            Route::History => "/message/history",
        }
    }

    /// Whether the route only reads (and so also answers `GET`).
    fn read_only(self) -> bool {
        matches!(
            self,
            Route::Me
                | Route::Find
                | Route::LoadFriends
                | Route::Requests
                | Route::Blocked
                | Route::LoadGroups
                | Route::GroupMembers
                | Route::Conversations
                | Route::History
        )
    }

    /// Whether `method` is allowed: `POST` everywhere, `GET` on the read-only routes
    /// (parameters then come from the query string). Methods are case-sensitive.
    pub fn allows(self, method: &str) -> bool {
        method == "POST" || (method == "GET" && self.read_only())
    }

    /// Whether the route needs a valid session token: all but register and login.
    pub fn needs_auth(self) -> bool {
        !matches!(self, Route::Register | Route::Login)
    }
}

/// A request for [`handle`], prepared by the event loop.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    /// The route.
    pub route: Route,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The whole body (the loop enforces its size limit).
    pub body: Vec<u8>,
    /// The query string without `?`, if any. Its fields are read after the body's.
    pub query: Option<String>,
    /// The session token from the request, if any.
    pub token: Option<String>,
    /// The current time, unix milliseconds.
    pub now_ms: i64,
    /// Whether the client reached us over HTTPS (a TLS-terminating proxy in front said
    /// `X-Forwarded-Proto: https`): the session cookie then carries `Secure`.
    pub secure: bool,
    /// `--instant-friends`: `/contact/addfriend` befriends at once, as in fastIM.
    pub instant_friends: bool,
}

/// What the event loop must change in its in-memory state after sending the reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// `user` is now a member of `group` (created or joined it).
    Joined {
        /// The user.
        user: i64,
        /// The group.
        group: i64,
    },
    /// The session with this token digest ended; the user's WebSocket connections opened
    /// with it should be closed.
    LoggedOut {
        /// The user.
        user: i64,
        /// [`crate::secret::token_digest`] of the ended session's token.
        token_digest: [u8; 32],
    },
    /// A group's membership or settings changed, with notices to deliver
    /// ([`GroupChange`]: joins, leaves, removals, renames, transfers).
    Group(Box<GroupChange>),
    /// `user` and `friend` are now friends of each other.
    Befriended {
        /// The user who added.
        user: i64,
        /// The user who was added.
        friend: i64,
    },
    /// `a` and `b` are no longer friends (one removed or blocked the other).
    Unfriended {
        /// One of them.
        a: i64,
        /// The other.
        b: i64,
    },
    /// `blocker` blocked (`on`) or unblocked `blocked`.
    Blocked {
        /// Who blocks.
        blocker: i64,
        /// Who is blocked.
        blocked: i64,
        /// Blocked (true) or unblocked.
        on: bool,
    },
    /// `event` goes to every open chat connection of `users` (`cmd 30`, `im/events.rs`).
    Notify {
        /// Who is told.
        users: Vec<i64>,
        /// What.
        event: ContactEvent,
    },
    /// `event` goes to `user`'s contacts, the ones the loop's index knows (friends and
    /// fellow group members), and to `user`'s own devices.
    NotifyContacts {
        /// Whose contacts.
        user: i64,
        /// What.
        event: ContactEvent,
    },
}

/// The reply to an [`ApiRequest`].
#[derive(Clone, Debug, PartialEq)]
pub struct ApiReply {
    /// HTTP status.
    pub status: Status,
    /// JSON body (send as `application/json; charset=utf-8`).
    pub body: Vec<u8>,
    /// A `Set-Cookie` header value (login, register, logout).
    pub set_cookie: Option<String>,
    /// What the loop must update once the reply is sent, in this order.
    pub effects: Vec<Effect>,
}

/// The body of a 500 reply, also used if a body cannot be serialized.
const INTERNAL_ERROR_BODY: &[u8] = br#"{"code":500,"msg":"internal error"}"#;

impl ApiReply {
    /// A reply with `status` and the JSON of `value`.
    fn json<T: Serialize>(status: Status, value: &T) -> ApiReply {
        let (status, body) = match serde_json::to_vec(value) {
            Ok(body) => (status, body),
            Err(e) => {
                log::error!("api: cannot serialize a reply: {e}");
                (Status::InternalServerError, INTERNAL_ERROR_BODY.to_vec())
            }
        };
        ApiReply {
            status,
            body,
            set_cookie: None,
            effects: Vec::new(),
        }
    }

    /// `{"code":0,"msg":"","data":…}`.
    fn data<T: Serialize>(data: T) -> ApiReply {
        ApiReply::json(
            Status::Ok,
            &DataEnvelope {
                code: 0,
                msg: "",
                data,
            },
        )
    }

    /// `{"code":0,"msg":msg,"data":…}`.
    fn data_with_msg<T: Serialize>(msg: &str, data: T) -> ApiReply {
        ApiReply::json(Status::Ok, &DataEnvelope { code: 0, msg, data })
    }

    /// `{"code":0,"msg":"","rows":[…],"total":n}`.
    fn rows<T: Serialize>(rows: &[T]) -> ApiReply {
        ApiReply::rows_from(rows, None)
    }

    /// [`ApiReply::rows`], with `"oldest":id` when `oldest` is given.
    fn rows_from<T: Serialize>(rows: &[T], oldest: Option<i64>) -> ApiReply {
        ApiReply::json(
            Status::Ok,
            &RowsEnvelope {
                code: 0,
                msg: "",
                rows,
                total: rows.len(),
                oldest,
            },
        )
    }

    /// `{"code":0,"msg":msg}`.
    fn done(msg: &str) -> ApiReply {
        ApiReply::envelope(Status::Ok, 0, msg)
    }

    /// `{"code":code,"msg":msg}` with `status`, serialized where every refusal is.
    fn envelope(status: Status, code: i32, msg: &str) -> ApiReply {
        ApiReply {
            status,
            body: crate::http::envelope(code, msg),
            set_cookie: None,
            effects: Vec::new(),
        }
    }

    /// Adds an effect.
    fn with_effect(mut self, effect: Effect) -> ApiReply {
        self.effects.push(effect);
        self
    }

    /// Adds a `cmd 30` event for `users`.
    fn notify(self, users: Vec<i64>, event: ContactEvent) -> ApiReply {
        self.with_effect(Effect::Notify { users, event })
    }

    /// Adds a `Set-Cookie` value.
    fn with_cookie(mut self, cookie: String) -> ApiReply {
        self.set_cookie = Some(cookie);
        self
    }
}

/// Why a request failed.
#[derive(Debug)]
enum Failure {
    /// Something the user can fix or should know (HTTP 200, `code` -1).
    App(String),
    /// The body cannot be decoded (HTTP 400).
    BadRequest(String),
    /// No valid session (HTTP 401).
    Unauthorized(&'static str),
    /// The thing asked for does not exist (HTTP 404).
    NotFound(&'static str),
    /// Our fault; already logged (HTTP 500).
    Internal,
    /// Refused with this status (the code is the status), e.g. 415 for an upload.
    Refused(Status, String),
}

impl Failure {
    /// An application failure about a field, e.g. `"nickname is required"`.
    fn field(msg: impl Into<String>) -> Failure {
        Failure::App(msg.into())
    }

    fn into_reply(self) -> ApiReply {
        let (status, code, msg) = match &self {
            Failure::App(msg) => (Status::Ok, -1, msg.as_str()),
            Failure::BadRequest(msg) => (Status::BadRequest, 400, msg.as_str()),
            Failure::Unauthorized(msg) => (Status::Unauthorized, 401, *msg),
            Failure::NotFound(msg) => (Status::NotFound, 404, *msg),
            Failure::Internal => (Status::InternalServerError, 500, "internal error"),
            Failure::Refused(status, msg) => (*status, i32::from(status.code()), msg.as_str()),
        };
        ApiReply::envelope(status, code, msg)
    }
}

impl From<StoreError> for Failure {
    /// Domain errors become application failures with the store's sentence; handlers map
    /// the ones they expect to more specific sentences first. Database errors are logged
    /// and become a 500.
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Sqlite(_) | StoreError::SchemaTooNew { .. } => {
                log::error!("api: store: {e}");
                Failure::Internal
            }
            other => Failure::App(other.to_string()),
        }
    }
}

/// The `msg` of a 401 without a token.
const MSG_LOGIN_REQUIRED: &str = "please log in first";
/// The `msg` of a 401 with an unknown or expired token.
/// What a client with an unknown or expired token is told.
pub const MSG_SESSION_INVALID: &str =
    "your session has expired or is not valid; please log in again";

/// The user whose session `token` is, if it exists and has not expired at `now_ms`.
///
/// # Errors
/// [`StoreError::Sqlite`] only.
pub fn session_user(db: &Db, token: &str, now_ms: i64) -> Result<Option<i64>, StoreError> {
    db.session_user(token_digest(token), now_ms)
}

/// The account (mobile number) a login request names, for the loop's throttle;
/// `None` if the body cannot be read (the worker then answers the error).
pub fn login_account(req: &ApiRequest) -> Option<String> {
    let fields =
        Fields::parse(req.content_type.as_deref(), &req.body, req.query.as_deref()).ok()?;
    fields.trimmed("mobile").ok().flatten().map(str::to_owned)
}

/// The authenticated caller of a request.
struct Caller<'r> {
    /// Their user id.
    id: i64,
    /// The token they presented.
    token: &'r str,
}

/// Runs one API request to completion. Blocks on the database (and, for register and
/// login, on password hashing): call it on a worker thread.
///
/// Never panics on any input; a database failure is logged and answered with a 500.
pub fn handle(db: &mut Db, req: ApiRequest) -> ApiReply {
    match run(db, &req) {
        Ok(reply) => reply,
        Err(failure) => failure.into_reply(),
    }
}

fn run(db: &mut Db, req: &ApiRequest) -> Result<ApiReply, Failure> {
    let route = req.route;
    let caller = if route.needs_auth() {
        Some(authenticate(db, req)?)
    } else {
        None
    };
    let fields = Fields::parse(req.content_type.as_deref(), &req.body, req.query.as_deref())?;
    let now = req.now_ms;
    let secure = req.secure;
    match (route, caller) {
        (Route::Register, _) => users::register(db, &fields, now, secure),
        (Route::Login, _) => users::login(db, &fields, now, secure),
        // Not reached: every other route needs a session.
        (_, None) => Err(Failure::Unauthorized(MSG_LOGIN_REQUIRED)),
        (Route::Logout, Some(c)) => users::logout(db, &c, secure),
        (Route::Me, Some(c)) => users::me(db, &c),
        (Route::Find, Some(_)) => users::find(db, &fields),
        (Route::UpdateProfile, Some(c)) => users::update(db, &c, &fields),
        (Route::AddFriend, Some(c)) => {
            friends::add_friend(db, &c, &fields, now, req.instant_friends)
        }
        (Route::Requests, Some(c)) => friends::requests(db, &c),
        (Route::Accept, Some(c)) => friends::accept(db, &c, &fields, now),
        (Route::Decline, Some(c)) => friends::decline(db, &c, &fields),
        (Route::CancelRequest, Some(c)) => friends::cancel(db, &c, &fields),
        (Route::RemoveFriend, Some(c)) => friends::remove_friend(db, &c, &fields),
        (Route::Block, Some(c)) => friends::block(db, &c, &fields, now),
        (Route::Unblock, Some(c)) => friends::unblock(db, &c, &fields),
        (Route::Blocked, Some(c)) => friends::blocked(db, &c),
        (Route::LoadFriends, Some(c)) => contacts::load_friends(db, &c),
        (Route::CreateGroup, Some(c)) => contacts::create_group(db, &c, &fields, now),
        (Route::JoinGroup, Some(c)) => contacts::join_group(db, &c, &fields, now),
        (Route::LeaveGroup, Some(c)) => contacts::leave_group(db, &c, &fields, now),
        (Route::LoadGroups, Some(c)) => contacts::load_groups(db, &c),
        (Route::GroupMembers, Some(c)) => contacts::members(db, &c, &fields),
        (Route::UpdateGroup, Some(c)) => groups::update(db, &c, &fields, now),
        (Route::RemoveMember, Some(c)) => groups::remove(db, &c, &fields, now),
        (Route::TransferGroup, Some(c)) => groups::transfer(db, &c, &fields, now),
        (Route::Conversations, Some(c)) => contacts::conversations(db, &c),
        (Route::History, Some(c)) => history::history(db, &c, &fields),
    }
}

/// The caller of a request, from its session token.
fn authenticate<'r>(db: &Db, req: &'r ApiRequest) -> Result<Caller<'r>, Failure> {
    let token = req
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or(Failure::Unauthorized(MSG_LOGIN_REQUIRED))?;
    let id =
        session_user(db, token, req.now_ms)?.ok_or(Failure::Unauthorized(MSG_SESSION_INVALID))?;
    Ok(Caller { id, token })
}

/// The `Set-Cookie` value that stores `token` for [`SESSION_TTL_MS`]; with `Secure` when
/// the client came over HTTPS ([`ApiRequest::secure`]), so the browser never sends the
/// token over plain HTTP.
pub fn session_cookie(token: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL_MS / 1000,
        secure_attribute(secure)
    )
}

/// The `Set-Cookie` value that deletes the session cookie (`Secure` as for
/// [`session_cookie`]: a browser ignores a plain-HTTP attempt to overwrite a secure cookie).
pub fn clear_session_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure_attribute(secure)
    )
}

fn secure_attribute(secure: bool) -> &'static str {
    if secure { "; Secure" } else { "" }
}

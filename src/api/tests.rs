//! Tests of the API through [`handle`], with a real database in a temporary directory.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::*;
use crate::secret::{hash_password, new_token};
use crate::store::testutil::{TestDb, test_db, text};
use crate::store::{NewUser, Peer};

const NOW: i64 = 1_700_000_000_000;
const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";
/// The password of users made by [`quick_user`].
const PASSWORD: &str = "secret+1";

/// A request with a body.
fn request(
    route: Route,
    content_type: Option<&str>,
    body: &[u8],
    token: Option<&str>,
) -> ApiRequest {
    ApiRequest {
        route,
        content_type: content_type.map(str::to_owned),
        body: body.to_vec(),
        query: None,
        token: token.map(str::to_owned),
        now_ms: NOW,
        secure: false,
        instant_friends: false,
    }
}

/// Runs a request; returns the reply and its body as JSON.
fn call(db: &mut Db, req: ApiRequest) -> (ApiReply, Value) {
    let reply = handle(db, req);
    let body: Value = serde_json::from_slice(&reply.body).expect("every reply body is JSON");
    (reply, body)
}

/// A form POST, as fastIM's client sends it.
fn form(db: &mut Db, route: Route, body: &str, token: Option<&str>) -> (ApiReply, Value) {
    call(db, request(route, Some(FORM), body.as_bytes(), token))
}

/// A JSON POST.
fn post_json(db: &mut Db, route: Route, body: &Value, token: Option<&str>) -> (ApiReply, Value) {
    let bytes = serde_json::to_vec(body).expect("json");
    call(db, request(route, Some(JSON), &bytes, token))
}

/// A GET with a query string.
fn get(db: &mut Db, route: Route, query: &str, token: Option<&str>) -> (ApiReply, Value) {
    let mut req = request(route, None, b"", token);
    req.query = Some(query.to_owned());
    call(db, req)
}

/// Asserts a 200 with code 0 and returns the body.
fn ok(r: (ApiReply, Value)) -> Value {
    let (reply, body) = r;
    assert_eq!(reply.status, Status::Ok, "{body}");
    assert_eq!(body["code"], 0, "{body}");
    body
}

/// Asserts an application failure (200, code -1) and returns its msg.
fn fail(r: (ApiReply, Value)) -> String {
    let (reply, body) = r;
    assert_eq!(reply.status, Status::Ok, "{body}");
    assert_eq!(body["code"], -1, "{body}");
    assert_eq!(reply.effects, []);
    assert_eq!(reply.set_cookie, None);
    assert_eq!(object_keys(&body), keys(&["code", "msg"]), "{body}");
    body["msg"].as_str().expect("msg").to_owned()
}

/// Asserts an HTTP error with the same number as `code` in the envelope; returns msg.
fn http_error(r: (ApiReply, Value), status: Status) -> String {
    let (reply, body) = r;
    assert_eq!(reply.status, status, "{body}");
    assert_eq!(body["code"], i64::from(status.code()), "{body}");
    assert_eq!(object_keys(&body), keys(&["code", "msg"]), "{body}");
    assert_eq!(reply.effects, []);
    body["msg"].as_str().expect("msg").to_owned()
}

fn keys(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

fn object_keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

const PUBLIC_KEYS: &[&str] = &["id", "nickname", "avatar", "sex", "memo"];
const OWN_KEYS: &[&str] = &[
    "id", "mobile", "avatar", "sex", "nickname", "memo", "createat",
];
const COMMUNITY_KEYS: &[&str] = &["id", "name", "ownerid", "icon", "cate", "memo", "createat"];

/// A user and a live session, made straight in the store (no Argon2 run per user).
struct Quick {
    id: i64,
    token: String,
}

fn quick_user(db: &mut Db, mobile: &str) -> Quick {
    static HASH: OnceLock<String> = OnceLock::new();
    let user = db
        .create_user(
            NewUser {
                mobile: mobile.to_owned(),
                password_hash: HASH.get_or_init(|| hash_password(PASSWORD)).clone(),
                nickname: format!("nick{mobile}"),
                avatar: "/asset/images/user.jpg".to_owned(),
                sex: "W".to_owned(),
                memo: "memo".to_owned(),
            },
            NOW - 1_000,
        )
        .expect("create user");
    let token = new_token();
    db.create_session(user.id, token_digest(&token), NOW + SESSION_TTL_MS)
        .expect("session");
    Quick { id: user.id, token }
}

fn create_group(db: &mut Db, owner: &Quick, name: &str) -> i64 {
    let body = ok(form(
        db,
        Route::CreateGroup,
        &format!("name={name}"),
        Some(&owner.token),
    ));
    body["data"]["id"].as_i64().expect("group id")
}

// ---------------------------------------------------------------------------------------
// Routes

#[test]
fn routes_paths_methods_and_auth() {
    for route in Route::ALL {
        assert_eq!(Route::from_path(route.path()), Some(route));
        assert!(route.allows("POST"), "{route:?}");
        assert!(!route.allows("PUT") && !route.allows("post") && !route.allows("DELETE"));
    }
    let paths: BTreeSet<_> = Route::ALL.iter().map(|r| r.path()).collect();
    assert_eq!(paths.len(), Route::ALL.len());
    assert_eq!(Route::from_path("/user/login"), Some(Route::Login));
    assert_eq!(
        Route::from_path("/contact/loadcommunity"),
        Some(Route::LoadGroups)
    );
    for bad in [
        "/user/login/",
        "/user/login?x=1",
        "/USER/LOGIN",
        "/user",
        "",
        "/chat",
    ] {
        assert_eq!(Route::from_path(bad), None, "{bad}");
    }
    let gets: Vec<_> = Route::ALL.into_iter().filter(|r| r.allows("GET")).collect();
    assert_eq!(
        gets,
        [
            Route::Me,
            Route::Find,
            Route::Requests,
            Route::Blocked,
            Route::LoadFriends,
            Route::LoadGroups,
            Route::GroupMembers,
            Route::Conversations,
            Route::History
        ]
    );
    let open: Vec<_> = Route::ALL.into_iter().filter(|r| !r.needs_auth()).collect();
    assert_eq!(open, [Route::Register, Route::Login]);
}

// ---------------------------------------------------------------------------------------
// Register and login

#[test]
fn register_as_the_original_client_does_and_use_the_token() {
    let mut t = test_db();
    // util.js post(): name=encodeURI(value) joined by &. register.html sends these fields,
    // with sex "" when the select was not touched, and passwdr (the confirmation).
    let body = "mobile=13800000000&passwd=a+b%20c%25ok&passwdr=a+b%20c%25ok&nickname=%E5%BC%A0\
                &memo=%E4%BD%A0%E5%A5%BD&avatar=/asset/images/user.jpg&sex=";
    let (reply, v) = form(&mut t.db, Route::Register, body, None);
    let v = ok((reply.clone(), v));
    let data = &v["data"];
    assert_eq!(v["msg"], "");
    let mut expected = keys(OWN_KEYS);
    expected.insert("token".to_owned());
    assert_eq!(object_keys(data), expected, "{data}");
    assert_eq!(data["mobile"], "13800000000");
    assert_eq!(data["nickname"], "张");
    assert_eq!(data["memo"], "你好", "memo is kept, unlike fastIM");
    assert_eq!(data["avatar"], "/asset/images/user.jpg");
    assert_eq!(data["sex"], "U");
    assert_eq!(data["createat"], NOW);
    let id = data["id"].as_i64().expect("id");
    assert!(id > 0);
    let token = data["token"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 43);

    // The cookie carries the same token.
    assert_eq!(
        reply.set_cookie.as_deref(),
        Some(
            format!("fastim_token={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000")
                .as_str()
        )
    );
    assert_eq!(reply.effects, []);

    // The token is a live session for the new user.
    assert_eq!(session_user(&t.db, &token, NOW).expect("q"), Some(id));
    let me = ok(get(&mut t.db, Route::Me, "", Some(&token)));
    assert_eq!(me["data"]["id"], id);
    assert_eq!(me["data"]["mobile"], "13800000000");
    assert_eq!(
        object_keys(&me["data"]),
        keys(OWN_KEYS),
        "no token on /user/me"
    );

    // The password is "a+b c%ok": + literal, %20 a space, %25 a percent sign.
    let login = ok(form(
        &mut t.db,
        Route::Login,
        "mobile=13800000000&passwd=a+b%20c%25ok",
        None,
    ));
    assert_eq!(login["data"]["id"], id);
    let msg = fail(form(
        &mut t.db,
        Route::Login,
        "mobile=13800000000&passwd=a%20b%20c%25ok",
        None,
    ));
    assert_eq!(msg, "wrong mobile number or password");
}

#[test]
fn register_with_json_accepts_numbers_for_text_and_ignores_unknown_fields() {
    let mut t = test_db();
    let v = ok(post_json(
        &mut t.db,
        Route::Register,
        &json!({"mobile": 13800000001_i64, "passwd": "secret-1", "nickname": "  Bob  ",
                "sex": "M", "id": 77, "token": "mine", "createat": 5}),
        None,
    ));
    assert_eq!(v["data"]["mobile"], "13800000001");
    assert_eq!(v["data"]["nickname"], "Bob", "trimmed");
    assert_eq!(v["data"]["sex"], "M");
    assert_eq!(v["data"]["createat"], NOW);
    assert_ne!(v["data"]["token"], "mine");
    assert_ne!(v["data"]["id"], 77);
    assert_eq!(v["data"]["avatar"], "");
    assert_eq!(v["data"]["memo"], "");
}

#[test]
fn register_validation_names_the_field() {
    let mut t = test_db();
    let long = |n: usize| "x".repeat(n);
    let base = "mobile=13800000000&passwd=secret-1&nickname=Ann";
    let cases: Vec<(String, &str)> = vec![
        (
            "passwd=secret-1&nickname=Ann".to_owned(),
            "mobile is required",
        ),
        (
            "mobile=1380000&passwd=secret-1&nickname=Ann"
                .to_owned()
                .replace("1380000", "1234"),
            "mobile must be 5 to 20 digits, optionally starting with +",
        ),
        (
            "mobile=138-0000-0000&passwd=secret-1&nickname=Ann".to_owned(),
            "mobile must be 5 to 20 digits, optionally starting with +",
        ),
        (
            "mobile=13800000000&nickname=Ann".to_owned(),
            "passwd is required",
        ),
        (
            "mobile=13800000000&passwd=1234567&nickname=Ann".to_owned(),
            "passwd must be 8 to 128 characters",
        ),
        (
            format!("mobile=13800000000&passwd={}&nickname=Ann", long(129)),
            "passwd must be 8 to 128 characters",
        ),
        (
            "mobile=13800000000&passwd=%20%20%20%20%20%20%20%20&nickname=Ann".to_owned(),
            "passwd must not be only whitespace",
        ),
        (
            "mobile=13800000000&passwd=aaaaaaaa&nickname=Ann".to_owned(),
            "passwd must not be one character repeated",
        ),
        (
            "mobile=13800000000&passwd=13800000000&nickname=Ann".to_owned(),
            "passwd must not be your mobile number",
        ),
        (
            "mobile=13800000000&passwd=%20Qwerty123&nickname=Ann".to_owned(),
            "passwd is one of the most common passwords; choose another",
        ),
        (
            "mobile=13800000000&passwd=secret-1".to_owned(),
            "nickname is required",
        ),
        (
            "mobile=13800000000&passwd=secret-1&nickname=%20%20".to_owned(),
            "nickname is required",
        ),
        (
            format!("mobile=13800000000&passwd=secret-1&nickname={}", long(21)),
            "nickname must be 1 to 20 characters",
        ),
        (
            "mobile=13800000000&passwd=secret-1&nickname=a%09b".to_owned(),
            "nickname must not contain control characters",
        ),
        (
            format!("{base}&avatar={}", long(251)),
            "avatar must be at most 250 characters",
        ),
        (format!("{base}&sex=F"), "sex must be M, W or U"),
        (
            format!("{base}&memo={}", long(141)),
            "memo must be at most 140 characters",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            fail(form(&mut t.db, Route::Register, &body, None)),
            expected,
            "{body}"
        );
    }
    assert_eq!(
        t.db.user_by_mobile("13800000000").expect("q"),
        None,
        "nothing created"
    );
    // At the limits, all is accepted.
    let body = format!(
        "mobile=%2B12345678901234567890&passwd={}&nickname={}&avatar={}&memo={}&sex=W",
        "xy".repeat(64),
        "张".repeat(20),
        long(250),
        long(140)
    );
    ok(form(&mut t.db, Route::Register, &body, None));
}

#[test]
fn register_refuses_a_taken_mobile() {
    let mut t = test_db();
    quick_user(&mut t.db, "13800000000");
    let msg = fail(form(
        &mut t.db,
        Route::Register,
        "mobile=13800000000&passwd=secret-1&nickname=Ann",
        None,
    ));
    assert_eq!(msg, "this mobile number is already registered");
}

#[test]
fn login_answers_the_same_for_unknown_mobile_and_wrong_password() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let (wrong_pw, _) = form(
        &mut t.db,
        Route::Login,
        "mobile=13800000001&passwd=nope-nope",
        None,
    );
    let (unknown, _) = form(
        &mut t.db,
        Route::Login,
        "mobile=13899999999&passwd=nope-nope",
        None,
    );
    assert_eq!(wrong_pw, unknown, "byte-identical replies");
    assert_eq!(
        String::from_utf8_lossy(&wrong_pw.body),
        r#"{"code":-1,"msg":"wrong mobile number or password"}"#
    );
    // A malformed number is just an unknown one.
    let (malformed, _) = form(&mut t.db, Route::Login, "mobile=abc&passwd=nope-nope", None);
    assert_eq!(malformed, unknown);

    assert_eq!(
        fail(form(&mut t.db, Route::Login, "passwd=x", None)),
        "mobile is required"
    );
    assert_eq!(
        fail(form(
            &mut t.db,
            Route::Login,
            "mobile=13800000001&passwd=",
            None
        )),
        "passwd is required"
    );

    // The right password: a new session each time, each one valid.
    let body = format!(
        "mobile=%2013800000001%20&passwd={}",
        PASSWORD.replace(' ', "%20")
    );
    let (reply, v) = form(&mut t.db, Route::Login, &body, None);
    let v = ok((reply.clone(), v));
    let token = v["data"]["token"].as_str().expect("token").to_owned();
    assert_ne!(token, alice.token);
    assert_eq!(v["data"]["id"], alice.id);
    assert_eq!(v["data"]["mobile"], "13800000001");
    let cookie = reply.set_cookie.expect("cookie");
    assert!(
        cookie.starts_with(&format!("fastim_token={token};")),
        "{cookie}"
    );
    for attr in ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=2592000"] {
        assert!(cookie.split("; ").any(|a| a == attr), "{attr} in {cookie}");
    }
    assert_eq!(session_user(&t.db, &token, NOW).expect("q"), Some(alice.id));
    assert_eq!(
        session_user(&t.db, &alice.token, NOW).expect("q"),
        Some(alice.id)
    );
    // Sessions expire after the TTL.
    assert_eq!(
        session_user(&t.db, &token, NOW + SESSION_TTL_MS - 1).expect("q"),
        Some(alice.id)
    );
    assert_eq!(
        session_user(&t.db, &token, NOW + SESSION_TTL_MS).expect("q"),
        None
    );
}

#[test]
fn a_blocked_account_is_told_so_only_with_the_right_password() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    assert_eq!(t.db.set_blocked(alice.id, true).expect("block"), 1);
    assert_eq!(session_user(&t.db, &alice.token, NOW).expect("q"), None);
    let body = format!("mobile=13800000001&passwd={}", PASSWORD.replace(' ', "%20"));
    let (reply, _) = form(&mut t.db, Route::Login, &body, None);
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        r#"{"code":-1,"msg":"this account is blocked"}"#
    );
    assert_eq!(
        fail(form(
            &mut t.db,
            Route::Login,
            "mobile=13800000001&passwd=nope-nope",
            None
        )),
        "wrong mobile number or password",
        "a guesser learns nothing"
    );
    t.db.set_blocked(alice.id, false).expect("unblock");
    ok(form(&mut t.db, Route::Login, &body, None));
}

#[test]
fn cookies_are_secure_behind_https() {
    let mut t = test_db();
    let secure = |route: Route, body: &str, token: Option<&str>| {
        let mut req = request(route, Some(FORM), body.as_bytes(), token);
        req.secure = true;
        req
    };
    let (reply, v) = call(
        &mut t.db,
        secure(
            Route::Register,
            "mobile=13800000001&passwd=secret-1&nickname=a",
            None,
        ),
    );
    let token = ok((reply.clone(), v))["data"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        reply.set_cookie.as_deref(),
        Some(
            format!(
                "fastim_token={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000; Secure"
            )
            .as_str()
        )
    );
    let (reply, v) = call(
        &mut t.db,
        secure(Route::Login, "mobile=13800000001&passwd=secret-1", None),
    );
    ok((reply.clone(), v));
    let cookie = reply.set_cookie.expect("cookie");
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let (reply, v) = call(&mut t.db, secure(Route::Logout, "", Some(&token)));
    ok((reply.clone(), v));
    assert_eq!(
        reply.set_cookie.as_deref(),
        Some("fastim_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure")
    );
    // Plain HTTP: no Secure (a browser would drop the cookie on http://).
    let (reply, _) = form(
        &mut t.db,
        Route::Login,
        "mobile=13800000001&passwd=secret-1",
        None,
    );
    let cookie = reply.set_cookie.expect("cookie");
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[test]
fn logout_ends_only_this_session_and_clears_the_cookie() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let second = ok(form(
        &mut t.db,
        Route::Login,
        "mobile=13800000001&passwd=secret+1",
        None,
    ));
    let second = second["data"]["token"].as_str().expect("token").to_owned();

    let (reply, v) = form(&mut t.db, Route::Logout, "", Some(&alice.token));
    assert_eq!(v, json!({"code": 0, "msg": "logged out"}));
    assert_eq!(
        reply.set_cookie.as_deref(),
        Some("fastim_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    );
    assert_eq!(
        reply.effects,
        vec![Effect::LoggedOut {
            user: alice.id,
            token_digest: token_digest(&alice.token)
        }]
    );
    http_error(
        form(&mut t.db, Route::Me, "", Some(&alice.token)),
        Status::Unauthorized,
    );
    ok(form(&mut t.db, Route::Me, "", Some(&second)));
}

// ---------------------------------------------------------------------------------------
// Authentication and malformed requests

#[test]
fn every_protected_route_needs_a_valid_unexpired_token() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    for route in Route::ALL.into_iter().filter(|r| r.needs_auth()) {
        let msg = http_error(
            form(&mut t.db, route, "dstid=1", None),
            Status::Unauthorized,
        );
        assert_eq!(msg, "please log in first");
        let msg = http_error(
            form(&mut t.db, route, "dstid=1", Some("")),
            Status::Unauthorized,
        );
        assert_eq!(msg, "please log in first");
        for bad in ["not-a-token", &new_token()] {
            let msg = http_error(form(&mut t.db, route, "", Some(bad)), Status::Unauthorized);
            assert_eq!(
                msg,
                "your session has expired or is not valid; please log in again"
            );
        }
        // Expired: the request comes at the session's expiry time.
        let mut req = request(route, Some(FORM), b"", Some(&alice.token));
        req.now_ms = NOW + SESSION_TTL_MS;
        http_error(call(&mut t.db, req), Status::Unauthorized);
        // Authentication comes before the body is read.
        http_error(
            call(&mut t.db, request(route, Some(JSON), b"{", None)),
            Status::Unauthorized,
        );
    }
    // A token given as a form field counts for nothing.
    http_error(
        form(
            &mut t.db,
            Route::Me,
            &format!("token={}", alice.token),
            None,
        ),
        Status::Unauthorized,
    );
}

#[test]
fn unparseable_bodies_are_400_with_the_envelope() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let cases: [(Option<&str>, &[u8]); 7] = [
        (Some(JSON), b"{\"mobile\":"),
        (Some(JSON), b"[\"mobile\"]"),
        (Some(JSON), b"\"13800000000\""),
        (Some("text/plain"), b"mobile=1"),
        (None, b"mobile=1"),
        (Some("multipart/form-data; boundary=b"), b"--b--"),
        (Some(FORM), b"nickname=%FF"),
    ];
    for (ct, body) in cases {
        http_error(
            call(&mut t.db, request(Route::Login, ct, body, None)),
            Status::BadRequest,
        );
        http_error(
            call(
                &mut t.db,
                request(Route::UpdateProfile, ct, body, Some(&alice.token)),
            ),
            Status::BadRequest,
        );
    }
    let mut req = request(Route::Find, None, b"", Some(&alice.token));
    req.query = Some("id=%E5%BC".to_owned());
    http_error(call(&mut t.db, req), Status::BadRequest);
    // An empty body of any type is just no fields.
    let msg = fail(call(
        &mut t.db,
        request(Route::Login, Some("text/plain"), b"", None),
    ));
    assert_eq!(msg, "mobile is required");
}

#[test]
fn a_database_failure_is_a_500_without_details() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let raw = rusqlite::Connection::open(TestDb::path(&t)).expect("raw connection");
    raw.execute_batch("DROP TABLE friends").expect("drop");
    drop(raw);
    let (reply, v) = form(&mut t.db, Route::LoadFriends, "", Some(&alice.token));
    assert_eq!(reply.status, Status::InternalServerError);
    assert_eq!(v, json!({"code": 500, "msg": "internal error"}));
    assert_eq!(reply.body, br#"{"code":500,"msg":"internal error"}"#);
}

// ---------------------------------------------------------------------------------------
// Profiles

#[test]
fn me_find_and_update() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");

    let me = ok(get(&mut t.db, Route::Me, "", Some(&alice.token)));
    assert_eq!(object_keys(&me["data"]), keys(OWN_KEYS));
    assert_eq!(me["data"]["id"], alice.id);

    // Find: POST {id} as the client sends it, or GET ?id=.
    let found = ok(form(
        &mut t.db,
        Route::Find,
        &format!("id={}", bob.id),
        Some(&alice.token),
    ));
    assert_eq!(object_keys(&found["data"]), keys(PUBLIC_KEYS), "no mobile");
    assert_eq!(found["data"]["id"], bob.id);
    assert_eq!(found["data"]["nickname"], "nick13800000002");
    let by_get = ok(get(
        &mut t.db,
        Route::Find,
        &format!("id={}", bob.id),
        Some(&alice.token),
    ));
    assert_eq!(by_get, found);
    let msg = http_error(
        form(&mut t.db, Route::Find, "id=99999", Some(&alice.token)),
        Status::NotFound,
    );
    assert_eq!(msg, "no such user");
    assert_eq!(
        fail(form(&mut t.db, Route::Find, "", Some(&alice.token))),
        "id is required"
    );
    assert_eq!(
        fail(form(&mut t.db, Route::Find, "id=abc", Some(&alice.token))),
        "id must be an integer"
    );

    // Update: only the given fields change; identity and mobile cannot be spoofed.
    let updated = ok(form(
        &mut t.db,
        Route::UpdateProfile,
        &format!(
            "userid={}&id={}&mobile=13900000000&nickname=%20Alicia%20&memo=&sex=M",
            bob.id, bob.id
        ),
        Some(&alice.token),
    ));
    let d = &updated["data"];
    assert_eq!(object_keys(d), keys(OWN_KEYS));
    assert_eq!(d["id"], alice.id);
    assert_eq!(d["mobile"], "13800000001");
    assert_eq!(d["nickname"], "Alicia");
    assert_eq!(d["memo"], "");
    assert_eq!(d["sex"], "M");
    assert_eq!(d["avatar"], "/asset/images/user.jpg");
    let bob_now = t.db.user_by_id(bob.id).expect("q").expect("bob");
    assert_eq!(bob_now.nickname, "nick13800000002", "bob untouched");

    // An empty update changes nothing.
    let same = ok(post_json(
        &mut t.db,
        Route::UpdateProfile,
        &json!({}),
        Some(&alice.token),
    ));
    assert_eq!(same["data"], updated["data"]);

    for (body, expected) in [
        ("nickname=", "nickname must be 1 to 20 characters"),
        ("nickname=%20", "nickname must be 1 to 20 characters"),
        (
            "nickname=123456789012345678901",
            "nickname must be 1 to 20 characters",
        ),
        ("sex=X", "sex must be M, W or U"),
    ] {
        assert_eq!(
            fail(form(
                &mut t.db,
                Route::UpdateProfile,
                body,
                Some(&alice.token)
            )),
            expected
        );
    }
    let long_avatar = format!("avatar={}", "a".repeat(251));
    assert_eq!(
        fail(form(
            &mut t.db,
            Route::UpdateProfile,
            &long_avatar,
            Some(&alice.token)
        )),
        "avatar must be at most 250 characters"
    );
    let long_memo = json!({"memo": "m".repeat(141)});
    assert_eq!(
        fail(post_json(
            &mut t.db,
            Route::UpdateProfile,
            &long_memo,
            Some(&alice.token)
        )),
        "memo must be at most 140 characters"
    );
    let bad_type = json!({"nickname": ["x"]});
    assert_eq!(
        fail(post_json(
            &mut t.db,
            Route::UpdateProfile,
            &bad_type,
            Some(&alice.token)
        )),
        "nickname must be a string or a number"
    );
    // Nothing of the failed updates was written.
    let me = ok(get(&mut t.db, Route::Me, "", Some(&alice.token)));
    assert_eq!(me["data"], updated["data"]);
}

// ---------------------------------------------------------------------------------------
// Friends

/// `/contact/addfriend` as a form, with `--instant-friends`.
fn instant(db: &mut Db, body: &str, token: &str) -> (ApiReply, Value) {
    let mut req = request(
        Route::AddFriend,
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
        Some(token),
    );
    req.instant_friends = true;
    call(db, req)
}

/// The `cmd 30` events of a reply: (users told, the frame as JSON).
fn events(reply: &ApiReply) -> Vec<(Vec<i64>, Value)> {
    reply
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify { users, event } => Some((
                users.clone(),
                serde_json::from_str(&event.to_json()).expect("json"),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn instant_friends_add_by_mobile_as_the_client_does_and_by_id() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let carol = quick_user(&mut t.db, "13800000003");

    // foot.html: post("contact/addfriend", {dstname: mobile, userid: userId()}); the
    // userid here claims to be carol: ignored.
    let (reply, v) = instant(
        &mut t.db,
        &format!("dstname=13800000002&userid={}", carol.id),
        &alice.token,
    );
    let v = ok((reply.clone(), v));
    assert_eq!(v["msg"], "friend added");
    assert_eq!(object_keys(&v["data"]), keys(PUBLIC_KEYS));
    assert_eq!(v["data"]["id"], bob.id);
    assert_eq!(
        reply.effects[0],
        Effect::Befriended {
            user: alice.id,
            friend: bob.id
        }
    );
    let told: Vec<_> = reply.effects[1..]
        .iter()
        .map(|e| match e {
            Effect::Notify { users, event } => (users.clone(), event.to_json()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(told.len(), 2);
    let json = |t: &str| serde_json::from_str::<serde_json::Value>(t).expect("json");
    assert_eq!(told[0].0, [alice.id]);
    let first = json(&told[0].1);
    assert_eq!(
        (&first["cmd"], &first["event"]),
        (&30.into(), &"friend_added".into())
    );
    assert_eq!(first["user"]["id"], bob.id);
    assert_eq!(object_keys(&first["user"]), keys(PUBLIC_KEYS));
    assert_eq!(told[1].0, [bob.id]);
    assert_eq!(json(&told[1].1)["user"]["id"], alice.id);

    ok(instant(
        &mut t.db,
        &format!("dstid={}", carol.id),
        &alice.token,
    ));

    let cases = [
        ("dstname=13800000002".to_owned(), "you are already friends"),
        (
            format!("dstid={}", alice.id),
            "you cannot add yourself as a friend",
        ),
        (
            "dstname=13800000001".to_owned(),
            "you cannot add yourself as a friend",
        ),
        (
            "dstname=13899999999".to_owned(),
            "no user has this mobile number",
        ),
        ("dstid=99999".to_owned(), "no such user"),
        (
            String::new(),
            "dstid (a user id) or dstname (a mobile number) is required",
        ),
        ("dstid=x".to_owned(), "dstid must be an integer"),
    ];
    for (body, expected) in cases {
        assert_eq!(
            fail(instant(&mut t.db, &body, &alice.token)),
            expected,
            "{body}"
        );
    }
    // Bob adding alice back: already friends.
    assert_eq!(
        fail(instant(&mut t.db, "dstname=13800000001", &bob.token)),
        "you are already friends"
    );
}

#[test]
fn add_friend_asks_and_the_other_side_accepts_or_declines() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let carol = quick_user(&mut t.db, "13800000003");

    let (reply, v) = form(
        &mut t.db,
        Route::AddFriend,
        "dstname=13800000002",
        Some(&alice.token),
    );
    let v = ok((reply.clone(), v));
    assert_eq!(v["msg"], "request sent");
    assert_eq!(v["data"]["status"], "requested");
    assert_eq!(v["data"]["user"]["id"], bob.id);
    assert_eq!(v["data"]["createat"], NOW);
    assert!(
        !t.db.are_friends(alice.id, bob.id).expect("q"),
        "not before bob says yes"
    );
    let told = events(&reply);
    assert_eq!(told.len(), 2);
    assert_eq!(told[0].0, [bob.id]);
    assert_eq!(told[0].1["event"], "friend_request");
    assert_eq!(told[0].1["user"]["id"], alice.id);
    assert_eq!(object_keys(&told[0].1["user"]), keys(PUBLIC_KEYS));
    // Alice's own devices learn of it too, with bob as the other one.
    assert_eq!(told[1].0, [alice.id]);
    assert_eq!(
        (
            &told[1].1["event"],
            &told[1].1["user"]["id"],
            &told[1].1["createat"]
        ),
        (&json!("request_sent"), &json!(bob.id), &json!(NOW))
    );
    assert_eq!(reply.effects.len(), 2, "no friendship for the index yet");

    // Again: the same answer, nobody told twice.
    let (reply, v) = form(
        &mut t.db,
        Route::AddFriend,
        "dstname=13800000002",
        Some(&alice.token),
    );
    assert_eq!(ok((reply.clone(), v))["data"]["status"], "requested");
    assert!(reply.effects.is_empty());

    // Bob's lists; alice's.
    let r = ok(get(&mut t.db, Route::Requests, "", Some(&bob.token)));
    assert_eq!(r["data"]["incoming"][0]["user"]["id"], alice.id);
    assert_eq!(r["data"]["incoming"][0]["createat"], NOW);
    assert_eq!(r["data"]["outgoing"], json!([]));
    let r = ok(get(&mut t.db, Route::Requests, "", Some(&alice.token)));
    assert_eq!(r["data"]["outgoing"][0]["user"]["id"], bob.id);

    // Bob accepts.
    let (reply, v) = form(
        &mut t.db,
        Route::Accept,
        &format!("dstid={}", alice.id),
        Some(&bob.token),
    );
    let v = ok((reply.clone(), v));
    assert_eq!(v["msg"], "you are now friends");
    assert_eq!(v["data"]["id"], alice.id);
    assert_eq!(
        reply.effects[0],
        Effect::Befriended {
            user: bob.id,
            friend: alice.id
        }
    );
    let told = events(&reply);
    assert_eq!(
        told.iter()
            .map(|(u, e)| (u.clone(), e["event"].clone(), e["user"]["id"].clone()))
            .collect::<Vec<_>>(),
        [
            (vec![bob.id], json!("friend_added"), json!(alice.id)),
            (vec![alice.id], json!("friend_added"), json!(bob.id)),
        ]
    );
    assert!(t.db.are_friends(alice.id, bob.id).expect("q"));
    assert_eq!(
        fail(form(
            &mut t.db,
            Route::Accept,
            &format!("dstid={}", alice.id),
            Some(&bob.token)
        )),
        "this user has no friend request waiting for you"
    );

    // Carol asks bob; bob declines; carol is told and may ask again.
    ok(form(
        &mut t.db,
        Route::AddFriend,
        &format!("dstid={}", bob.id),
        Some(&carol.token),
    ));
    let (reply, v) = form(
        &mut t.db,
        Route::Decline,
        &format!("dstid={}", carol.id),
        Some(&bob.token),
    );
    assert_eq!(ok((reply.clone(), v))["msg"], "request declined");
    assert_eq!(
        events(&reply),
        [
            (
                vec![carol.id],
                json!({"cmd": 30, "event": "request_declined", "userid": bob.id})
            ),
            (
                vec![bob.id],
                json!({"cmd": 30, "event": "request_declined", "userid": carol.id})
            ),
        ]
    );
    assert!(!t.db.are_friends(carol.id, bob.id).expect("q"));

    // Carol asks and withdraws: bob is told.
    ok(form(
        &mut t.db,
        Route::AddFriend,
        &format!("dstid={}", bob.id),
        Some(&carol.token),
    ));
    let (reply, v) = form(
        &mut t.db,
        Route::CancelRequest,
        &format!("dstid={}", bob.id),
        Some(&carol.token),
    );
    assert_eq!(ok((reply.clone(), v))["msg"], "request withdrawn");
    assert_eq!(
        events(&reply),
        [
            (
                vec![bob.id],
                json!({"cmd": 30, "event": "request_withdrawn", "userid": carol.id})
            ),
            (
                vec![carol.id],
                json!({"cmd": 30, "event": "request_withdrawn", "userid": bob.id})
            ),
        ]
    );
    assert_eq!(
        fail(form(
            &mut t.db,
            Route::CancelRequest,
            &format!("dstid={}", bob.id),
            Some(&carol.token)
        )),
        "you have no friend request waiting for this user"
    );

    // Requests that meet: carol asks again, bob asks carol.
    ok(form(
        &mut t.db,
        Route::AddFriend,
        &format!("dstid={}", bob.id),
        Some(&carol.token),
    ));
    let (reply, v) = form(
        &mut t.db,
        Route::AddFriend,
        &format!("dstid={}", carol.id),
        Some(&bob.token),
    );
    let v = ok((reply.clone(), v));
    assert_eq!(v["data"]["status"], "friends");
    assert_eq!(events(&reply).len(), 2);
    assert!(t.db.are_friends(carol.id, bob.id).expect("q"));

    // Bad input.
    for (route, body, expected) in [
        (
            Route::AddFriend,
            String::new(),
            "dstid (a user id) or dstname (a mobile number) is required",
        ),
        (
            Route::AddFriend,
            format!("dstid={}", alice.id),
            "you cannot add yourself as a friend",
        ),
        (Route::AddFriend, "dstid=99999".to_owned(), "no such user"),
        (
            Route::AddFriend,
            format!("dstid={}", bob.id),
            "you are already friends",
        ),
        (Route::Accept, String::new(), "dstid is required"),
        (Route::Accept, "dstid=99999".to_owned(), "no such user"),
        (
            Route::Decline,
            format!("dstid={}", carol.id),
            "this user has no friend request waiting for you",
        ),
        (
            Route::RemoveFriend,
            format!("dstid={}", carol.id),
            "this user is not your friend",
        ),
        (
            Route::Unblock,
            format!("dstid={}", carol.id),
            "this user is not blocked",
        ),
        (
            Route::Block,
            format!("dstid={}", alice.id),
            "you cannot block yourself",
        ),
    ] {
        assert_eq!(
            fail(form(&mut t.db, route, &body, Some(&alice.token))),
            expected,
            "{route:?} {body}"
        );
    }
}

#[test]
fn the_pending_cap_is_a_429() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    for i in 0..crate::api::MAX_PENDING_REQUESTS {
        let other = quick_user(&mut t.db, &format!("1390000{i:04}"));
        ok(form(
            &mut t.db,
            Route::AddFriend,
            &format!("dstid={}", other.id),
            Some(&alice.token),
        ));
    }
    let one_more = quick_user(&mut t.db, "13999999999");
    let (reply, v) = form(
        &mut t.db,
        Route::AddFriend,
        &format!("dstid={}", one_more.id),
        Some(&alice.token),
    );
    assert_eq!(reply.status, Status::TooManyRequests);
    assert_eq!(v["code"], 429);
    assert!(
        v["msg"]
            .as_str()
            .expect("msg")
            .contains("100 friend requests waiting"),
        "{v}"
    );
}

#[test]
fn remove_and_block_tell_whom_they_concern() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let carol = quick_user(&mut t.db, "13800000003");
    t.db.add_friend(alice.id, bob.id, NOW).expect("friends");
    let (reply, v) = form(
        &mut t.db,
        Route::RemoveFriend,
        &format!("dstid={}", bob.id),
        Some(&alice.token),
    );
    assert_eq!(ok((reply.clone(), v))["msg"], "friend removed");
    assert_eq!(
        reply.effects[0],
        Effect::Unfriended {
            a: alice.id,
            b: bob.id
        }
    );
    let told = events(&reply);
    assert_eq!(
        told[0],
        (
            vec![alice.id],
            json!({"cmd": 30, "event": "friend_removed", "userid": bob.id})
        )
    );
    assert_eq!(
        told[1],
        (
            vec![bob.id],
            json!({"cmd": 30, "event": "friend_removed", "userid": alice.id})
        )
    );

    // Alice asks carol, then blocks her: carol hears the request is gone, never of the block.
    ok(form(
        &mut t.db,
        Route::AddFriend,
        &format!("dstid={}", carol.id),
        Some(&alice.token),
    ));
    let (reply, v) = form(
        &mut t.db,
        Route::Block,
        "dstname=13800000003",
        Some(&alice.token),
    );
    assert_eq!(ok((reply.clone(), v))["data"]["id"], carol.id);
    assert_eq!(
        reply.effects[0],
        Effect::Blocked {
            blocker: alice.id,
            blocked: carol.id,
            on: true
        }
    );
    let told = events(&reply);
    assert_eq!(told.len(), 2);
    assert_eq!(
        told[0],
        (
            vec![carol.id],
            json!({"cmd": 30, "event": "request_withdrawn", "userid": alice.id})
        )
    );
    assert_eq!(told[1].0, [alice.id]);
    assert_eq!(
        (&told[1].1["event"], &told[1].1["user"]["id"]),
        (&json!("blocked"), &json!(carol.id))
    );
    let listed = ok(get(&mut t.db, Route::Blocked, "", Some(&alice.token)));
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["rows"][0]["user"]["id"], carol.id);
    assert_eq!(listed["rows"][0]["createat"], NOW);
    // Neither may ask the other now.
    for (who, other) in [(&carol, alice.id), (&alice, carol.id)] {
        assert_eq!(
            fail(form(
                &mut t.db,
                Route::AddFriend,
                &format!("dstid={other}"),
                Some(&who.token)
            )),
            "you cannot send a friend request to this user"
        );
    }
    let (reply, v) = form(
        &mut t.db,
        Route::Unblock,
        &format!("dstid={}", carol.id),
        Some(&alice.token),
    );
    assert_eq!(ok((reply.clone(), v))["msg"], "user unblocked");
    assert_eq!(
        reply.effects[0],
        Effect::Blocked {
            blocker: alice.id,
            blocked: carol.id,
            on: false
        }
    );
    assert_eq!(
        events(&reply)[0],
        (
            vec![alice.id],
            json!({"cmd": 30, "event": "unblocked", "userid": carol.id})
        )
    );
    assert_eq!(
        ok(get(&mut t.db, Route::Blocked, "", Some(&alice.token)))["total"],
        0
    );
}

#[test]
fn load_friends_lists_public_profiles_of_the_callers_friends() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let carol = quick_user(&mut t.db, "13800000003");
    t.db.add_friend(alice.id, bob.id, NOW).expect("friends");
    t.db.add_friend(carol.id, alice.id, NOW + 1)
        .expect("friends");

    // The client sends userid; asking as bob with carol's id still lists bob's friends.
    let v = ok(form(
        &mut t.db,
        Route::LoadFriends,
        &format!("userid={}", carol.id),
        Some(&bob.token),
    ));
    assert_eq!(v["total"], 1);
    assert_eq!(object_keys(&v), keys(&["code", "msg", "rows", "total"]));
    assert_eq!(v["rows"][0]["id"], alice.id);

    let v = ok(get(&mut t.db, Route::LoadFriends, "", Some(&alice.token)));
    assert_eq!(v["total"], 2);
    let rows = v["rows"].as_array().expect("rows");
    let ids: Vec<_> = rows.iter().map(|r| r["id"].as_i64()).collect();
    assert_eq!(ids, [Some(bob.id), Some(carol.id)]);
    // fastIM's fields, and the unread count fastim adds.
    let mut friend_keys = keys(PUBLIC_KEYS);
    friend_keys.insert("unread".to_owned());
    for row in rows {
        assert_eq!(object_keys(row), friend_keys, "{row}");
    }

    let empty = quick_user(&mut t.db, "13800000004");
    let v = ok(form(&mut t.db, Route::LoadFriends, "", Some(&empty.token)));
    assert_eq!(v, json!({"code": 0, "msg": "", "rows": [], "total": 0}));
}

// ---------------------------------------------------------------------------------------
// Groups

#[test]
fn create_group_as_the_client_does() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    // createcom.html sends name, ownerid (= userId(), here spoofed as bob), icon, cate, memo.
    let (reply, v) = form(
        &mut t.db,
        Route::CreateGroup,
        &format!(
            "name=%20Rust%20%E7%88%B1%E5%A5%BD%E8%80%85%20&ownerid={}&icon=/resource/g.png\
             &cate=2&memo=about+us",
            bob.id
        ),
        Some(&alice.token),
    );
    let v = ok((reply.clone(), v));
    let d = &v["data"];
    assert_eq!(object_keys(d), keys(COMMUNITY_KEYS));
    assert_eq!(d["name"], "Rust 爱好者");
    assert_eq!(d["ownerid"], alice.id, "the caller, not the ownerid field");
    assert_eq!(d["icon"], "/resource/g.png");
    assert_eq!(d["cate"], 2);
    assert_eq!(d["memo"], "about+us");
    assert_eq!(d["createat"], NOW);
    let group = d["id"].as_i64().expect("id");
    assert_eq!(
        reply.effects,
        vec![
            Effect::Joined {
                user: alice.id,
                group
            },
            Effect::Notify {
                users: vec![alice.id],
                event: crate::im::events::ContactEvent::GroupJoined { group: d.clone() }
            }
        ]
    );
    assert!(t.db.is_member(group, alice.id).expect("q"));
    assert!(!t.db.is_member(group, bob.id).expect("q"));

    // JSON with a numeric cate; defaults.
    let v = ok(post_json(
        &mut t.db,
        Route::CreateGroup,
        &json!({"name": "second", "cate": 4}),
        Some(&alice.token),
    ));
    assert_eq!(v["data"]["cate"], 4);
    let v = ok(post_json(
        &mut t.db,
        Route::CreateGroup,
        &json!({"name": "third"}),
        Some(&alice.token),
    ));
    assert_eq!(
        (v["data"]["cate"].as_i64(), v["data"]["icon"].as_str()),
        (Some(0), Some(""))
    );

    let cases = [
        ("cate=1".to_owned(), "name is required"),
        ("name=%20".to_owned(), "name is required"),
        (
            format!("name={}", "n".repeat(31)),
            "name must be 1 to 30 characters",
        ),
        (
            "name=x&cate=100".to_owned(),
            "cate must be an integer from 0 to 99",
        ),
        (
            "name=x&cate=abc".to_owned(),
            "cate must be an integer from 0 to 99",
        ),
        (
            format!("name=x&icon={}", "i".repeat(251)),
            "icon must be at most 250 characters",
        ),
        (
            format!("name=x&memo={}", "m".repeat(121)),
            "memo must be at most 120 characters",
        ),
        (
            "name=Rust%20%E7%88%B1%E5%A5%BD%E8%80%85".to_owned(),
            "a group with this name already exists; choose another name",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            fail(form(&mut t.db, Route::CreateGroup, &body, Some(&bob.token))),
            expected,
            "{body}"
        );
    }
    assert!(t.db.groups_of(bob.id).expect("q").is_empty());
}

#[test]
fn a_user_owns_at_most_five_groups() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    for i in 0..MAX_GROUPS_OWNED {
        create_group(&mut t.db, &alice, &format!("g{i}"));
    }
    assert_eq!(
        fail(form(
            &mut t.db,
            Route::CreateGroup,
            "name=g5",
            Some(&alice.token)
        )),
        "you can own at most 5 groups"
    );
    assert_eq!(t.db.groups_of(alice.id).expect("q").len(), 5);
}

#[test]
fn join_by_name_as_the_client_does_or_by_id_and_list_groups() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let carol = quick_user(&mut t.db, "13800000003");
    let g1 = create_group(&mut t.db, &alice, "Rust%20fans");
    let g2 = create_group(&mut t.db, &carol, "other");

    // foot.html: post("contact/joincommunity", {dstname: name, userid: userId()}).
    let (reply, v) = form(
        &mut t.db,
        Route::JoinGroup,
        &format!("dstname=%20Rust%20fans%20&userid={}", carol.id),
        Some(&bob.token),
    );
    let v = ok((reply.clone(), v));
    assert_eq!(v["data"]["id"], g1);
    assert_eq!(object_keys(&v["data"]), keys(COMMUNITY_KEYS));
    assert_group_effect(&reply, g1, Some(bob.id), None, &["joined"]);
    assert!(t.db.is_member(g1, bob.id).expect("q"));
    assert!(!t.db.is_member(g1, carol.id).expect("q"));

    let (reply, _) = post_json(
        &mut t.db,
        Route::JoinGroup,
        &json!({"dstid": g2}),
        Some(&bob.token),
    );
    assert_group_effect(&reply, g2, Some(bob.id), None, &["joined"]);

    let cases = [
        (
            "dstname=Rust%20fans".to_owned(),
            "you are already a member of this group",
        ),
        (
            format!("dstid={g1}"),
            "you are already a member of this group",
        ),
        ("dstname=rust%20fans".to_owned(), "no group has this name"),
        ("dstid=99999".to_owned(), "no such group"),
        (
            String::new(),
            "dstname (the name of the group to join) is required",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            fail(form(&mut t.db, Route::JoinGroup, &body, Some(&bob.token))),
            expected,
            "{body}"
        );
    }

    let v = ok(form(
        &mut t.db,
        Route::LoadGroups,
        &format!("userid={}", alice.id),
        Some(&bob.token),
    ));
    assert_eq!(v["total"], 2);
    let rows = v["rows"].as_array().expect("rows");
    let ids: Vec<_> = rows.iter().map(|r| r["id"].as_i64()).collect();
    assert_eq!(ids, [Some(g1), Some(g2)]);
    let mut group_keys = keys(COMMUNITY_KEYS);
    group_keys.insert("unread".to_owned());
    for row in rows {
        assert_eq!(object_keys(row), group_keys);
    }
    assert_eq!(rows[0]["name"], "Rust fans");
    assert_eq!(rows[0]["ownerid"], alice.id);
    let v = ok(get(&mut t.db, Route::LoadGroups, "", Some(&alice.token)));
    assert_eq!(v["total"], 1);
}

#[test]
fn leave_group_hands_over_then_deletes() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let g = create_group(&mut t.db, &alice, "g");
    ok(form(
        &mut t.db,
        Route::JoinGroup,
        "dstname=g",
        Some(&bob.token),
    ));

    // The owner leaves: bob owns it now.
    let (reply, v) = form(
        &mut t.db,
        Route::LeaveGroup,
        &format!("dstid={g}"),
        Some(&alice.token),
    );
    assert_eq!(
        v,
        json!({"code": 0, "msg": "you left the group; the member who joined first now owns it"})
    );
    assert_group_effect(&reply, g, None, Some(alice.id), &["left", "owner"]);
    assert_eq!(
        t.db.group_by_id(g).expect("q").expect("group").owner_id,
        bob.id
    );

    assert_eq!(
        fail(form(
            &mut t.db,
            Route::LeaveGroup,
            &format!("dstid={g}"),
            Some(&alice.token)
        )),
        "you are not a member of this group"
    );
    assert_eq!(
        fail(form(&mut t.db, Route::LeaveGroup, "", Some(&alice.token))),
        "dstid is required"
    );

    // The last member leaves: the group is gone.
    let (reply, v) = post_json(
        &mut t.db,
        Route::LeaveGroup,
        &json!({"dstid": g}),
        Some(&bob.token),
    );
    assert_eq!(v["code"], 0);
    assert_eq!(
        v["msg"],
        "you left the group; it had no other members and was deleted"
    );
    let change = group_effect(&reply);
    assert!(change.deleted && change.notices.is_empty(), "{change:?}");
    assert_eq!(t.db.group_by_id(g).expect("q"), None);
    assert_eq!(
        fail(form(
            &mut t.db,
            Route::LeaveGroup,
            &format!("dstid={g}"),
            Some(&bob.token)
        )),
        "no such group"
    );
}

#[test]
fn members_are_listed_with_roles_for_members_only() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let carol = quick_user(&mut t.db, "13800000003");
    let g = create_group(&mut t.db, &alice, "g");
    ok(form(
        &mut t.db,
        Route::JoinGroup,
        "dstname=g",
        Some(&bob.token),
    ));

    let v = ok(get(
        &mut t.db,
        Route::GroupMembers,
        &format!("dstid={g}"),
        Some(&bob.token),
    ));
    assert_eq!(v["total"], 2);
    let mut member_keys = keys(PUBLIC_KEYS);
    member_keys.insert("role".to_owned());
    member_keys.insert("read".to_owned());
    let rows = v["rows"].as_array().expect("rows");
    for row in rows {
        assert_eq!(object_keys(row), member_keys, "{row}");
    }
    assert_eq!(
        (&rows[0]["id"], &rows[0]["role"]),
        (&json!(alice.id), &json!("owner"))
    );
    assert_eq!(
        (&rows[1]["id"], &rows[1]["role"]),
        (&json!(bob.id), &json!("member"))
    );

    assert_eq!(
        fail(form(
            &mut t.db,
            Route::GroupMembers,
            &format!("dstid={g}"),
            Some(&carol.token)
        )),
        "you are not a member of this group"
    );
    assert_eq!(
        fail(form(
            &mut t.db,
            Route::GroupMembers,
            "dstid=99999",
            Some(&carol.token)
        )),
        "no such group"
    );
    assert_eq!(
        fail(form(&mut t.db, Route::GroupMembers, "", Some(&carol.token))),
        "dstid is required"
    );
}

// ---------------------------------------------------------------------------------------
// History

fn contents(v: &Value) -> Vec<String> {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["content"].as_str().expect("content").to_owned())
        .collect()
}

#[test]
fn history_of_one_to_one_chats_is_only_the_callers_own() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let carol = quick_user(&mut t.db, "13800000003");
    let batch: Vec<_> = (0..5)
        .map(|i| {
            if i % 2 == 0 {
                text(alice.id, Peer::User(bob.id), &format!("m{i}"))
            } else {
                text(bob.id, Peer::User(alice.id), &format!("m{i}"))
            }
        })
        .chain([text(carol.id, Peer::User(alice.id), "from carol")])
        .collect();
    let saved = t.db.save_messages(&batch, NOW).expect("save");

    let v = ok(get(
        &mut t.db,
        Route::History,
        &format!("dstid={}&cmd=10", bob.id),
        Some(&alice.token),
    ));
    assert_eq!(contents(&v), ["m4", "m3", "m2", "m1", "m0"], "newest first");
    assert_eq!(v["total"], 5);
    let row = &v["rows"][0];
    assert_eq!(
        object_keys(row),
        keys(&[
            "id", "userid", "cmd", "dstid", "media", "content", "pic", "url", "memo", "amount",
            "createat"
        ])
    );
    assert_eq!(row["id"], saved[4].id);
    assert_eq!(row["userid"], alice.id);
    assert_eq!(row["cmd"], 10);
    assert_eq!(row["dstid"], bob.id);
    assert_eq!(row["media"], 1);
    assert_eq!(row["createat"], NOW);

    // Bob sees the same conversation; carol asking for it gets her own with bob: nothing.
    let v = ok(form(
        &mut t.db,
        Route::History,
        &format!("dstid={}&cmd=10", alice.id),
        Some(&bob.token),
    ));
    assert_eq!(contents(&v).len(), 5);
    let v = ok(form(
        &mut t.db,
        Route::History,
        &format!("dstid={}&cmd=10&userid={}", bob.id, alice.id),
        Some(&carol.token),
    ));
    assert_eq!(v["total"], 0, "spoofed userid ignored");
    let v = ok(form(
        &mut t.db,
        Route::History,
        &format!("dstid={}&cmd=10", alice.id),
        Some(&carol.token),
    ));
    assert_eq!(contents(&v), ["from carol"]);

    // Paging.
    let v = ok(post_json(
        &mut t.db,
        Route::History,
        &json!({"dstid": bob.id, "cmd": 10, "limit": 2}),
        Some(&alice.token),
    ));
    assert_eq!(contents(&v), ["m4", "m3"]);
    let last = v["rows"][1]["id"].as_i64().expect("id");
    let v = ok(post_json(
        &mut t.db,
        Route::History,
        &json!({"dstid": bob.id, "cmd": "10", "limit": "2", "before": last}),
        Some(&alice.token),
    ));
    assert_eq!(contents(&v), ["m2", "m1"]);
    // A huge limit is cut, not refused.
    let v = ok(form(
        &mut t.db,
        Route::History,
        &format!("dstid={}&cmd=10&limit=100000", bob.id),
        Some(&alice.token),
    ));
    assert_eq!(v["total"], 5);

    let base = format!("dstid={}", bob.id);
    let cases = [
        ("cmd=10".to_owned(), "dstid is required"),
        (base.clone(), "cmd is required"),
        (
            format!("{base}&cmd=12"),
            "cmd must be 10 (one-to-one) or 11 (group)",
        ),
        (
            format!("{base}&cmd=x"),
            "cmd must be 10 (one-to-one) or 11 (group)",
        ),
        (
            format!("{base}&cmd=10&before=0"),
            "before must be a positive message id",
        ),
        (
            format!("{base}&cmd=10&before=x"),
            "before must be an integer",
        ),
        (
            format!("{base}&cmd=10&limit=0"),
            "limit must be at least 1 (at most 200 are returned)",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            fail(form(&mut t.db, Route::History, &body, Some(&alice.token))),
            expected,
            "{body}"
        );
    }
}

#[test]
fn history_says_where_retention_made_it_start() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let old: Vec<_> = (0..3)
        .map(|i| text(alice.id, Peer::User(bob.id), &format!("old {i}")))
        .collect();
    let old = t.db.save_messages(&old, NOW - 10).expect("old");
    let new =
        t.db.save_messages(&[text(bob.id, Peer::User(alice.id), "new")], NOW)
            .expect("new");
    let query = format!("dstid={}&cmd=10", bob.id);
    let v = ok(get(&mut t.db, Route::History, &query, Some(&alice.token)));
    assert_eq!(v["oldest"], 1, "nothing removed yet");
    assert_eq!(v["total"], 4);

    t.db.remove_old_messages(NOW, 1_000).expect("retention");
    let v = ok(get(&mut t.db, Route::History, &query, Some(&alice.token)));
    assert_eq!(contents(&v), ["new"]);
    assert_eq!(v["oldest"], old[2].id + 1);
    assert_eq!(
        v["oldest"], new[0].id,
        "history starts at the first kept message"
    );
    // Asking before where history starts: nothing, and where it starts.
    let v = ok(get(
        &mut t.db,
        Route::History,
        &format!("{query}&before={}", old[2].id),
        Some(&alice.token),
    ));
    assert_eq!(
        (v["total"].clone(), v["oldest"].clone()),
        (json!(0), json!(new[0].id))
    );
    // The list envelopes of other routes are unchanged.
    let v = ok(get(&mut t.db, Route::LoadFriends, "", Some(&alice.token)));
    assert!(v.get("oldest").is_none(), "{v}");
}

#[test]
fn history_of_a_group_is_for_members_only_and_starts_at_joining() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bob = quick_user(&mut t.db, "13800000002");
    let carol = quick_user(&mut t.db, "13800000003");
    let g = create_group(&mut t.db, &alice, "g");
    t.db.save_messages(&[text(alice.id, Peer::Group(g), "before bob")], NOW)
        .expect("save");
    ok(form(
        &mut t.db,
        Route::JoinGroup,
        &format!("dstid={g}"),
        Some(&bob.token),
    ));
    t.db.save_messages(
        &[
            text(alice.id, Peer::Group(g), "hi bob"),
            text(bob.id, Peer::Group(g), "hi all"),
        ],
        NOW,
    )
    .expect("save");

    let q = format!("dstid={g}&cmd=11");
    // Bob's joining left a notice in the conversation, in id order (media 100).
    let joined = format!(
        r#"{{"notice":"joined","userid":{},"nickname":"nick13800000002"}}"#,
        bob.id
    );
    let v = ok(get(&mut t.db, Route::History, &q, Some(&alice.token)));
    assert_eq!(contents(&v), ["hi all", "hi bob", &joined, "before bob"]);
    assert_eq!(v["rows"][2]["media"], crate::store::NOTICE);
    assert_eq!(v["rows"][2]["userid"], bob.id);
    let v = ok(get(&mut t.db, Route::History, &q, Some(&bob.token)));
    assert_eq!(contents(&v), ["hi all", "hi bob", &joined]);
    assert_eq!(v["rows"][0]["cmd"], 11);
    assert_eq!(v["rows"][0]["dstid"], g);

    assert_eq!(
        fail(get(&mut t.db, Route::History, &q, Some(&carol.token))),
        "you are not a member of this group"
    );
    assert_eq!(
        fail(get(
            &mut t.db,
            Route::History,
            "dstid=99999&cmd=11",
            Some(&carol.token)
        )),
        "no such group"
    );
}

// ---------------------------------------------------------------------------------------
// Secrets

#[test]
fn no_reply_carries_a_password_hash_or_anyone_elses_token() {
    let mut t = test_db();
    // Registered through the API: real Argon2 hashes in the table.
    let reg = |db: &mut Db, mobile: &str| {
        let v = ok(form(
            db,
            Route::Register,
            &format!(
                "mobile={mobile}&passwd=correct-horse&nickname=user{}",
                &mobile[mobile.len() - 1..]
            ),
            None,
        ));
        (
            v["data"]["id"].as_i64().expect("id"),
            v["data"]["token"].as_str().expect("token").to_owned(),
        )
    };
    let (alice, alice_token) = reg(&mut t.db, "13800000001");
    let (bob, bob_token) = reg(&mut t.db, "13800000002");
    let login = ok(form(
        &mut t.db,
        Route::Login,
        "mobile=13800000002&passwd=correct-horse",
        None,
    ));
    let bob_token2 = login["data"]["token"].as_str().expect("token").to_owned();

    let g = {
        let v = ok(form(
            &mut t.db,
            Route::CreateGroup,
            "name=g",
            Some(&bob_token),
        ));
        v["data"]["id"].as_i64().expect("id")
    };
    t.db.save_messages(&[text(bob, Peer::User(alice), "hello")], NOW)
        .expect("save");

    let a = Some(alice_token.as_str());
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let requests: Vec<(Route, String)> = vec![
        (Route::AddFriend, "dstname=13800000002".to_owned()),
        (Route::LoadFriends, String::new()),
        (Route::Find, format!("id={bob}")),
        (Route::Me, String::new()),
        (Route::UpdateProfile, "memo=x".to_owned()),
        (Route::JoinGroup, "dstname=g".to_owned()),
        (Route::LoadGroups, String::new()),
        (Route::GroupMembers, format!("dstid={g}")),
        (Route::History, format!("dstid={bob}&cmd=10")),
        (Route::History, format!("dstid={g}&cmd=11")),
        (Route::LeaveGroup, format!("dstid={g}")),
        (Route::Find, "id=99999".to_owned()),
        (Route::AddFriend, "dstname=13800000002".to_owned()),
    ];
    for (route, body) in requests {
        let (reply, _) = form(&mut t.db, route, &body, a);
        bodies.push(reply.body);
    }
    let (reply, _) = form(
        &mut t.db,
        Route::Login,
        "mobile=13800000001&passwd=correct-horse",
        None,
    );
    bodies.push(reply.body);
    let (reply, _) = form(&mut t.db, Route::Logout, "", a);
    bodies.push(reply.body);

    for body in &bodies {
        let text = String::from_utf8_lossy(body);
        for secret in [
            bob_token.as_str(),
            bob_token2.as_str(),
            "$argon2",
            "argon2id",
            "password_hash",
            "passwd",
        ] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
        assert!(
            !text.contains("13800000002"),
            "bob's mobile leaked in {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Robustness

#[test]
fn odd_inputs_never_panic() {
    let mut t = test_db();
    let alice = quick_user(&mut t.db, "13800000001");
    let bodies: [&[u8]; 12] = [
        b"",
        b"&&&===",
        b"%",
        b"dstid=9223372036854775807&cmd=11&before=9223372036854775807&limit=9223372036854775807",
        b"dstid=-9223372036854775808&cmd=10&limit=-1",
        b"id=-1",
        b"dstname=&dstid=",
        b"name=\x00&nickname=%00",
        b"\xff\xfe",
        b"{}",
        b"{\"dstid\": 1e400}",
        b"{\"dstid\": -0.0, \"cmd\": 1e2}",
    ];
    for route in Route::ALL {
        if route == Route::Logout {
            continue;
        }
        for body in bodies {
            for ct in [Some(FORM), Some(JSON), None] {
                let mut req = request(route, ct, body, Some(&alice.token));
                req.query = Some(String::from_utf8_lossy(body).into_owned());
                let (reply, v) = call(&mut t.db, req);
                assert_ne!(reply.status, Status::InternalServerError, "{route:?} {v}");
            }
        }
    }
}

#[test]
fn an_extreme_clock_does_not_overflow() {
    let mut t = test_db();
    let mut req = request(
        Route::Register,
        Some(FORM),
        b"mobile=13800000001&passwd=secret-1&nickname=a",
        None,
    );
    req.now_ms = i64::MAX;
    let (reply, v) = call(&mut t.db, req);
    assert_eq!(reply.status, Status::Ok, "{v}");
}

/// The reply's one group change.
fn group_effect(reply: &ApiReply) -> &super::GroupChange {
    let changes: Vec<_> = reply
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Group(c) => Some(&**c),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 1, "{:?}", reply.effects);
    changes[0]
}

/// The reply's effect is a group change of `group` with these joins, leaves and notices.
fn assert_group_effect(
    reply: &ApiReply,
    group: i64,
    joined: Option<i64>,
    left: Option<i64>,
    notices: &[&str],
) {
    let change = group_effect(reply);
    assert_eq!(
        (change.group, change.joined, change.left, change.deleted),
        (group, joined, left, false)
    );
    let kinds: Vec<String> = change
        .notices
        .iter()
        .map(|n| {
            assert_eq!(n.media, crate::store::NOTICE);
            let v: serde_json::Value = serde_json::from_str(&n.content).expect("json");
            v["notice"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(kinds, notices);
}

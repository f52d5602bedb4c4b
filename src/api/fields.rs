//! Request fields: decoding the body (form or JSON) and the query string, then reading
//! and validating single fields with messages that name the field.

use super::Failure;
use crate::http::form::{FormError, parse_form};

/// One field's value as received.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    /// Text: a form value, a JSON string, or a JSON number written out (`12`, `1.5`).
    Text(String),
    /// A JSON value that cannot stand for a field (`true`, an array, an object).
    Unusable,
}

/// The fields of a request: body fields first, then query fields. Reading a name takes
/// its first occurrence, so the body wins over the query and the first of repeated form
/// fields wins (as Go's `PostForm.Get` did for fastIM).
#[derive(Clone, Debug, Default)]
pub(super) struct Fields {
    pairs: Vec<(String, Value)>,
}

/// What kind of body a `Content-Type` announces.
enum BodyKind {
    Form,
    Json,
    Other,
}

fn body_kind(content_type: Option<&str>) -> BodyKind {
    let Some(ct) = content_type else {
        return BodyKind::Other;
    };
    let media_type = ct.split(';').next().unwrap_or(ct).trim();
    if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        BodyKind::Form
    } else if media_type.eq_ignore_ascii_case("application/json") {
        BodyKind::Json
    } else {
        BodyKind::Other
    }
}

fn form_failure(e: &FormError) -> Failure {
    Failure::BadRequest(e.to_string())
}

impl Fields {
    /// Decodes the body according to `content_type`, then appends the query's fields.
    ///
    /// An empty body has no fields whatever its type. A non-empty body must be a form or
    /// a JSON object.
    ///
    /// # Errors
    /// [`Failure::BadRequest`]: bad JSON, JSON that is not an object, an unsupported or
    /// missing content type with a non-empty body, or text that is not UTF-8.
    pub(super) fn parse(
        content_type: Option<&str>,
        body: &[u8],
        query: Option<&str>,
    ) -> Result<Fields, Failure> {
        let mut pairs = Vec::new();
        if !body.is_empty() {
            match body_kind(content_type) {
                BodyKind::Form => pairs.extend(
                    parse_form(body)
                        .map_err(|e| form_failure(&e))?
                        .into_iter()
                        .map(|(n, v)| (n, Value::Text(v))),
                ),
                BodyKind::Json => pairs.extend(json_fields(body)?),
                BodyKind::Other => {
                    return Err(Failure::BadRequest(format!(
                        "unsupported Content-Type {}: send application/x-www-form-urlencoded \
                         or application/json",
                        content_type.map_or_else(|| "(none)".to_owned(), |c| format!("{c:?}"))
                    )));
                }
            }
        }
        if let Some(query) = query {
            pairs.extend(
                parse_form(query.as_bytes())
                    .map_err(|e| form_failure(&e))?
                    .into_iter()
                    .map(|(n, v)| (n, Value::Text(v))),
            );
        }
        Ok(Fields { pairs })
    }

    /// The first value of `name`; `None` if absent.
    ///
    /// # Errors
    /// A field error if the value is a JSON boolean, array or object.
    pub(super) fn text(&self, name: &str) -> Result<Option<&str>, Failure> {
        match self.pairs.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, Value::Text(s))) => Ok(Some(s)),
            Some((_, Value::Unusable)) => Err(Failure::field(format!(
                "{name} must be a string or a number"
            ))),
        }
    }

    /// The value of `name`, trimmed; `None` if absent or blank.
    ///
    /// # Errors
    /// As [`Fields::text`].
    pub(super) fn trimmed(&self, name: &str) -> Result<Option<&str>, Failure> {
        Ok(self.text(name)?.map(str::trim).filter(|s| !s.is_empty()))
    }

    /// An integer field; `None` if absent or blank. Accepts a JSON number or a decimal
    /// string, surrounding whitespace allowed.
    ///
    /// # Errors
    /// A field error naming `name` if the value is not an integer that fits in 64 bits.
    pub(super) fn int(&self, name: &str) -> Result<Option<i64>, Failure> {
        match self.trimmed(name)? {
            None => Ok(None),
            Some(s) => s
                .parse::<i64>()
                .map(Some)
                .map_err(|_| Failure::field(format!("{name} must be an integer"))),
        }
    }

    /// A required integer field.
    ///
    /// # Errors
    /// As [`Fields::int`], and "`name` is required" if absent.
    pub(super) fn required_int(&self, name: &str) -> Result<i64, Failure> {
        self.int(name)?
            .ok_or_else(|| Failure::field(format!("{name} is required")))
    }
}

/// The fields of a JSON object body. `null` counts as absent.
fn json_fields(body: &[u8]) -> Result<Vec<(String, Value)>, Failure> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Failure::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(Failure::BadRequest(
            "the JSON body must be an object of fields".to_owned(),
        ));
    };
    Ok(map
        .into_iter()
        .filter_map(|(name, v)| {
            let value = match v {
                serde_json::Value::Null => return None,
                serde_json::Value::String(s) => Value::Text(s),
                serde_json::Value::Number(n) => Value::Text(n.to_string()),
                serde_json::Value::Bool(_)
                | serde_json::Value::Array(_)
                | serde_json::Value::Object(_) => Value::Unusable,
            };
            Some((name, value))
        })
        .collect())
}

/// Checks a length in characters (Unicode scalar values).
fn check_len(name: &str, value: &str, min: usize, max: usize) -> Result<(), Failure> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(Failure::field(if min == 0 {
            format!("{name} must be at most {max} characters")
        } else {
            format!("{name} must be {min} to {max} characters")
        }));
    }
    Ok(())
}

/// A mobile number: `^\+?[0-9]{5,20}$` after trimming. Any country: fastIM's client only
/// accepted Chinese numbers.
pub(super) fn mobile(fields: &Fields) -> Result<String, Failure> {
    let m = fields
        .trimmed("mobile")?
        .ok_or_else(|| Failure::field("mobile is required"))?;
    check_mobile(m).map(str::to_owned).map_err(Failure::field)
}

/// The mobile rule of [`mobile`] on a plain string (for the command line): the trimmed
/// number, or the message that says what is wrong.
///
/// # Errors
/// The refusal, as a sentence.
pub fn check_mobile(m: &str) -> Result<&str, String> {
    let m = m.trim();
    let digits = m.strip_prefix('+').unwrap_or(m);
    if !(5..=20).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("mobile must be 5 to 20 digits, optionally starting with +".to_owned());
    }
    Ok(m)
}

/// Fewest characters in a new password.
pub(super) const PASSWORD_MIN: usize = 8;
/// Most characters in a new password.
pub(super) const PASSWORD_MAX: usize = 128;

/// The most common passwords of at least [`PASSWORD_MIN`] characters (from the public
/// top-100 lists, plus a few common with Chinese users), lowercase. A new password is
/// compared with them case-insensitively after trimming. Shorter ones need no entry: the
/// length rule refuses them.
#[rustfmt::skip]
const COMMON_PASSWORDS: &[&str] = &[
    "00000000", "11111111", "88888888", "12345678", "123456789", "1234567890",
    "12345678910", "1234567891", "87654321", "987654321", "9876543210", "11223344",
    "12341234", "12344321", "123123123", "123321123", "147258369", "147852369", "123654789",
    "741852963", "789456123", "qwerty123", "qwerty12", "qwerty1234", "qwertyui",
    "qwertyuiop", "qwer1234", "1234qwer", "qwe123qwe", "123qweasd", "qweasdzxc",
    "qazwsxedc", "1q2w3e4r", "1q2w3e4r5t", "1q2w3e4r5t6y", "q1w2e3r4", "q1w2e3r4t5",
    "1qaz2wsx", "1qazxsw2", "zaq12wsx", "zaq1zaq1", "zaq1xsw2", "asdfghjkl", "asdfasdf",
    "asdf1234", "zxcvbnm1", "zxcvbnm123", "password", "password1", "password12",
    "password123", "password!", "passw0rd", "p@ssw0rd", "p@ssword", "pa55word", "passwort",
    "iloveyou", "iloveyou1", "iloveyou2", "princess", "princess1", "sunshine", "sunshine1",
    "football", "football1", "baseball", "basketball", "superman", "starwars", "whatever",
    "trustno1", "welcome1", "welcome123", "letmein1", "letmein123", "abc12345", "abcd1234",
    "1234abcd", "a1b2c3d4", "abcdefgh", "abc123456", "a12345678", "a123456789", "aa123456",
    "aa12345678", "123456aa", "123456abc", "qq123456", "admin123", "admin1234",
    "administrator", "changeme", "computer", "internet", "michael1", "jennifer", "jordan23",
    "liverpool", "chelsea1", "charlie1", "butterfly", "chocolate", "freedom1", "mustang1",
    "shadow12", "master12", "dragon12", "monkey12", "blink182", "woaini1314", "woaini520",
    "5201314520",
];

/// A new password (registration, and any future password change): [`PASSWORD_MIN`] to
/// [`PASSWORD_MAX`] characters, not only whitespace, not one character repeated, not
/// the account's `mobile` number, not one of [`COMMON_PASSWORDS`]. Stored as sent (not
/// trimmed); the comparisons are made on the trimmed value.
pub(super) fn new_password(fields: &Fields, mobile: &str) -> Result<String, Failure> {
    let p = fields
        .text("passwd")?
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Failure::field("passwd is required"))?;
    check_new_password(p, mobile).map_err(Failure::field)?;
    Ok(p.to_owned())
}

/// The rule of [`new_password`] on a plain string, for the command line (`fastim admin
/// user add` and `passwd` refuse what registration refuses).
///
/// # Errors
/// The refusal, as a sentence naming `passwd`.
pub fn check_new_password(p: &str, mobile: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("passwd is required".to_owned());
    }
    let n = p.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(format!(
            "passwd must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"
        ));
    }
    let trimmed = p.trim();
    if trimmed.is_empty() {
        return Err("passwd must not be only whitespace".to_owned());
    }
    let mut chars = trimmed.chars();
    if chars.next().is_some_and(|first| chars.all(|c| c == first)) {
        return Err("passwd must not be one character repeated".to_owned());
    }
    let mobile = mobile.trim();
    if trimmed == mobile || Some(trimmed) == mobile.strip_prefix('+') {
        return Err("passwd must not be your mobile number".to_owned());
    }
    let lower = trimmed.to_lowercase();
    if COMMON_PASSWORDS.contains(&lower.as_str()) {
        return Err("passwd is one of the most common passwords; choose another".to_owned());
    }
    Ok(())
}

/// A nickname for the command line: trimmed, 1 to `max` characters, no control
/// characters (the rule of [`name`]).
///
/// # Errors
/// The refusal, as a sentence naming `nickname`.
pub fn check_nickname(n: &str, max: usize) -> Result<&str, String> {
    let n = n.trim();
    let len = n.chars().count();
    if len == 0 || len > max {
        return Err(format!("nickname must be 1 to {max} characters"));
    }
    if n.chars().any(char::is_control) {
        return Err("nickname must not contain control characters".to_owned());
    }
    Ok(n)
}

/// A display name (user nickname or group name): trimmed, `1..=max` characters, no
/// control characters. `None` if absent or blank.
pub(super) fn name(fields: &Fields, field: &str, max: usize) -> Result<Option<String>, Failure> {
    let Some(n) = fields.trimmed(field)? else {
        return Ok(None);
    };
    check_len(field, n, 1, max)?;
    if n.chars().any(char::is_control) {
        return Err(Failure::field(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(Some(n.to_owned()))
}

/// Like [`name`], but absence is an error.
pub(super) fn required_name(fields: &Fields, field: &str, max: usize) -> Result<String, Failure> {
    name(fields, field, max)?.ok_or_else(|| Failure::field(format!("{field} is required")))
}

/// Free text of at most `max` characters (avatar, icon, memo), as sent. `None` if absent.
pub(super) fn text_at_most(
    fields: &Fields,
    field: &str,
    max: usize,
) -> Result<Option<String>, Failure> {
    let Some(t) = fields.text(field)? else {
        return Ok(None);
    };
    check_len(field, t, 0, max)?;
    Ok(Some(t.to_owned()))
}

/// `M`, `W` or `U`; `None` if absent or blank.
pub(super) fn sex(fields: &Fields) -> Result<Option<String>, Failure> {
    match fields.trimmed("sex")? {
        None => Ok(None),
        Some(s @ ("M" | "W" | "U")) => Ok(Some(s.to_owned())),
        Some(_) => Err(Failure::field("sex must be M, W or U")),
    }
}

/// A group category: an integer 0-99; `None` if absent or blank.
pub(super) fn cate(fields: &Fields) -> Result<Option<i64>, Failure> {
    let msg = "cate must be an integer from 0 to 99";
    match fields.int("cate") {
        Ok(Some(c)) if (0..=99).contains(&c) => Ok(Some(c)),
        Ok(None) => Ok(None),
        Ok(Some(_)) | Err(Failure::App(_)) => Err(Failure::field(msg)),
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Fields {
        Fields::parse(
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
            None,
        )
        .expect("form")
    }

    fn json(body: &str) -> Fields {
        Fields::parse(
            Some("application/json; charset=utf-8"),
            body.as_bytes(),
            None,
        )
        .expect("json")
    }

    fn bad_request(ct: Option<&str>, body: &[u8], query: Option<&str>) -> String {
        match Fields::parse(ct, body, query) {
            Err(Failure::BadRequest(msg)) => msg,
            other => panic!("expected 400, got {other:?}"),
        }
    }

    fn app_msg(r: Result<impl std::fmt::Debug, Failure>) -> String {
        match r {
            Err(Failure::App(msg)) => msg,
            other => panic!("expected an application error, got {other:?}"),
        }
    }

    #[test]
    fn content_types() {
        let f = Fields::parse(
            Some("Application/X-WWW-Form-Urlencoded;charset=UTF-8"),
            b"a=1",
            None,
        )
        .expect("form, any case, with parameters");
        assert_eq!(f.text("a").expect("a"), Some("1"));
        let f = Fields::parse(Some(" application/json "), br#"{"a":"x"}"#, None).expect("json");
        assert_eq!(f.text("a").expect("a"), Some("x"));

        for ct in [
            None,
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
        ] {
            let msg = bad_request(ct, b"a=1", None);
            assert!(msg.contains("unsupported Content-Type"), "{msg}");
        }
        // An empty body is fine with any type, or none.
        for ct in [None, Some("text/plain"), Some("application/json")] {
            let f = Fields::parse(ct, b"", Some("id=3")).expect("empty body");
            assert_eq!(f.int("id").expect("id"), Some(3));
        }
    }

    #[test]
    fn bad_json_and_non_objects_are_400() {
        for body in [
            &b"{"[..],
            b"not json",
            b"[1,2]",
            b"\"s\"",
            b"12",
            b"null",
            b"{\"a\":1}x",
        ] {
            let msg = bad_request(Some("application/json"), body, None);
            assert!(msg.contains("JSON"), "{msg}");
        }
        let msg = bad_request(
            Some("application/x-www-form-urlencoded"),
            b"nickname=%FF",
            None,
        );
        assert_eq!(msg, "the value of nickname is not valid UTF-8");
        let msg = bad_request(None, b"", Some("id=%C3%28"));
        assert!(msg.contains("UTF-8"), "{msg}");
    }

    #[test]
    fn json_numbers_strings_nulls_and_unusable_values() {
        let f = json(
            r#"{"dstid": 7, "cate": "3", "memo": null, "big": 1.5, "b": true, "arr": [], "o": {}}"#,
        );
        assert_eq!(f.int("dstid").expect("number"), Some(7));
        assert_eq!(f.int("cate").expect("string"), Some(3));
        assert_eq!(f.text("memo").expect("null"), None);
        assert_eq!(app_msg(f.int("big")), "big must be an integer");
        for name in ["b", "arr", "o"] {
            assert_eq!(
                app_msg(f.text(name)),
                format!("{name} must be a string or a number")
            );
        }
    }

    #[test]
    fn body_wins_over_query_and_first_duplicate_wins() {
        let f = Fields::parse(
            Some("application/x-www-form-urlencoded"),
            b"id=1&id=2",
            Some("id=3&dstid=4"),
        )
        .expect("fields");
        assert_eq!(f.int("id").expect("id"), Some(1));
        assert_eq!(f.int("dstid").expect("query"), Some(4));
    }

    #[test]
    fn integers() {
        let f = form("a=%2012%20&b=&c=x&d=99999999999999999999&e=-3");
        assert_eq!(f.int("a").expect("trimmed"), Some(12));
        assert_eq!(f.int("b").expect("blank"), None);
        assert_eq!(f.int("zz").expect("absent"), None);
        assert_eq!(app_msg(f.int("c")), "c must be an integer");
        assert_eq!(app_msg(f.int("d")), "d must be an integer");
        assert_eq!(f.int("e").expect("negative"), Some(-3));
        assert_eq!(app_msg(f.required_int("zz")), "zz is required");
    }

    #[test]
    fn mobile_rule() {
        for ok in ["13800000000", "+4915112345678", "12345", "%2012345%20"] {
            assert!(mobile(&form(&format!("mobile={ok}"))).is_ok(), "{ok}");
        }
        assert_eq!(
            mobile(&form("mobile=%2012345%20")).expect("trimmed"),
            "12345"
        );
        for bad in [
            "1234",
            "123456789012345678901",
            "+",
            "138-0000",
            "abcde",
            "++12345",
            "１２３４５",
        ] {
            assert_eq!(
                app_msg(mobile(&form(&format!("mobile={bad}")))),
                "mobile must be 5 to 20 digits, optionally starting with +",
                "{bad}"
            );
        }
        assert_eq!(app_msg(mobile(&form("x=1"))), "mobile is required");
        assert_eq!(app_msg(mobile(&form("mobile=%20"))), "mobile is required");
    }

    fn pw(value: &str) -> Result<String, Failure> {
        let body = form_urlencoded_value(value);
        new_password(&form(&format!("passwd={body}")), "+8613800000000")
    }

    /// Percent-encodes every byte, so any test password survives the form decoder.
    fn form_urlencoded_value(value: &str) -> String {
        value.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    #[test]
    fn password_rule_counts_characters_and_keeps_spaces() {
        assert_eq!(pw(" abcdefg").expect("8"), " abcdefg", "taken as sent");
        assert_eq!(pw("secret-1").expect("8"), "secret-1");
        assert!(pw(&"xy".repeat(64)).is_ok(), "128");
        assert!(pw("密码密码密码密").is_err(), "7 characters, 21 bytes");
        assert!(pw("密码密码密码密码").is_ok(), "8 characters");
        let msg = "passwd must be 8 to 128 characters";
        for short in ["123456", "      ", "abcdefg", "secret1"] {
            assert_eq!(app_msg(pw(short)), msg, "{short:?}");
        }
        assert_eq!(app_msg(pw(&"xy".repeat(65))), msg);
        assert_eq!(
            app_msg(new_password(&form("passwd="), "12345")),
            "passwd is required"
        );
        assert_eq!(
            app_msg(new_password(&form("x=1"), "12345")),
            "passwd is required"
        );
    }

    #[test]
    fn weak_passwords_are_refused() {
        for blank in [
            "        ",
            " \t \n    ",
            "\u{3000}\u{3000}\u{3000}\u{3000}   \t",
        ] {
            assert_eq!(
                app_msg(pw(blank)),
                "passwd must not be only whitespace",
                "{blank:?}"
            );
        }
        for same in [
            "aaaaaaaa",
            "________",
            "  zzzzzzzz  ",
            "ééééééééé",
            &"7".repeat(128),
        ] {
            assert_eq!(
                app_msg(pw(same)),
                "passwd must not be one character repeated",
                "{same:?}"
            );
        }
        for own in ["+8613800000000", "8613800000000", " 8613800000000 "] {
            assert_eq!(
                app_msg(pw(own)),
                "passwd must not be your mobile number",
                "{own:?}"
            );
        }
        let common = "passwd is one of the most common passwords; choose another";
        for weak in [
            "12345678",
            "password",
            "PassWord",
            "qwerty123",
            "QWERTY123",
            "iloveyou",
            " iloveyou ",
            "Password1",
            "1q2w3e4r",
            "woaini1314",
        ] {
            assert_eq!(app_msg(pw(weak)), common, "{weak:?}");
        }
        // Near misses are fine: the list is of exact passwords, not words to avoid.
        for fine in [
            "password-for-me",
            "12345678a!",
            "whatever1",
            "hunter22",
            "pass word 1",
        ] {
            assert!(pw(fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn common_password_list_is_lowercase_and_long_enough() {
        for &p in COMMON_PASSWORDS {
            assert_eq!(p, p.to_lowercase(), "{p}");
            assert_eq!(p, p.trim(), "{p}");
            assert!(
                (PASSWORD_MIN..=PASSWORD_MAX).contains(&p.chars().count()),
                "{p} could never reach the list check"
            );
        }
        assert!(COMMON_PASSWORDS.len() >= 100);
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            name(&form("nickname=%20%E5%BC%A0%E4%B8%89%20"), "nickname", 20).expect("ok"),
            Some("张三".to_owned())
        );
        assert!(name(&form(&format!("n={}", "张".repeat(20))), "n", 20).is_ok());
        assert_eq!(
            app_msg(name(&form(&format!("n={}", "张".repeat(21))), "n", 20)),
            "n must be 1 to 20 characters"
        );
        assert_eq!(
            app_msg(name(&form("nickname=a%0Ab"), "nickname", 20)),
            "nickname must not contain control characters"
        );
        assert_eq!(
            name(&form("nickname=%20%20"), "nickname", 20).expect("blank"),
            None
        );
        assert_eq!(
            app_msg(required_name(&form("x=1"), "name", 30)),
            "name is required"
        );
    }

    #[test]
    fn free_text_sex_and_cate() {
        assert_eq!(
            app_msg(text_at_most(
                &form(&format!("memo={}", "m".repeat(141))),
                "memo",
                140
            )),
            "memo must be at most 140 characters"
        );
        assert_eq!(
            text_at_most(&form("memo="), "memo", 140).expect("empty"),
            Some(String::new())
        );
        assert_eq!(sex(&form("sex=W")).expect("W"), Some("W".to_owned()));
        assert_eq!(sex(&form("sex=")).expect("blank"), None);
        assert_eq!(app_msg(sex(&form("sex=F"))), "sex must be M, W or U");
        assert_eq!(cate(&form("cate=99")).expect("99"), Some(99));
        assert_eq!(cate(&form("x=1")).expect("absent"), None);
        for bad in ["100", "-1", "x", "1.5"] {
            assert_eq!(
                app_msg(cate(&form(&format!("cate={bad}")))),
                "cate must be an integer from 0 to 99"
            );
        }
    }
}

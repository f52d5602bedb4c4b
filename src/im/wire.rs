//! The chat messages on the `/chat` WebSocket, as JSON text frames.
//!
//! Field names are fastIM's (`id, userid, cmd, dstid, media, content, pic, url, memo,
//! amount`), so fastIM clients keep working; the server adds `createat` and the
//! reliability commands (ack, error, sync). A frame from the client is parsed into a
//! flat [`ClientFrame`] and converted into a [`Command`]: an unknown or malformed one
//! becomes a [`WireError`] that is answered on the socket, never a dropped connection.

use serde::{Deserialize, Deserializer, Serialize};

use crate::store::{CMD_GROUP, CMD_SINGLE, NewMessage, Peer, StoredMessage};

/// `cmd` of a heartbeat, both ways.
pub const CMD_HEARTBEAT: i64 = 0;
/// `cmd` of a sync request: "everything after this id".
pub const CMD_SYNC: i64 = 20;
/// `cmd` of the server's acknowledgement of a stored message.
pub const CMD_ACK: i64 = 21;
/// `cmd` of the server's error reply.
pub const CMD_ERROR: i64 = 22;
/// `cmd` of the server's end-of-sync marker.
pub const CMD_SYNC_DONE: i64 = 23;

/// Longest `content`, in characters.
pub const MAX_CONTENT_CHARS: usize = 4000;
/// Longest `url` or `pic`, in bytes.
pub const MAX_URL_LEN: usize = 1024;
/// Longest `memo`, in characters.
pub const MAX_MEMO_CHARS: usize = 140;
/// Longest client reference, in bytes.
pub const MAX_REF_LEN: usize = 64;

/// A frame as a client sends it. Unknown fields (and `userid`: the sender is whoever
/// the connection authenticated as) are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct ClientFrame {
    #[serde(default, deserialize_with = "lenient_i64")]
    cmd: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    id: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    dstid: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    media: Option<i64>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    pic: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    memo: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    amount: Option<i64>,
    #[serde(default, rename = "ref", deserialize_with = "lenient_string")]
    client_ref: Option<String>,
}

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `cmd 0`: answered with a heartbeat.
    Heartbeat,
    /// `cmd 10` or `11`: store and deliver a message.
    Send(Outgoing),
    /// `cmd 20`: send every message after `after` (the last id the client has).
    Sync {
        /// The last message id the client has seen (0 for everything).
        after: i64,
    },
}

/// A message to store and deliver, with the client's reference for the ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Recipient user or group.
    pub to: Peer,
    /// fastIM's `media`: 1 text, 3 audio, 4 image (also emoji, as a GIF URL).
    pub media: i64,
    /// Text.
    pub content: String,
    /// Kept as sent.
    pub pic: String,
    /// Image or audio URL.
    pub url: String,
    /// Kept as sent.
    pub memo: String,
    /// Audio length in seconds.
    pub amount: i64,
    /// The client's reference, echoed in the ack; repeats are stored once.
    pub client_ref: Option<String>,
}

impl Outgoing {
    /// The row to store for `sender`.
    pub fn into_new_message(self, sender_id: i64) -> NewMessage {
        NewMessage {
            sender_id,
            to: self.to,
            media: self.media,
            content: self.content,
            pic: self.pic,
            url: self.url,
            memo: self.memo,
            amount: self.amount,
            client_ref: self.client_ref,
        }
    }
}

/// Why a client frame is refused, with the reference to answer to when one was readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// The frame's `ref`, if any.
    pub client_ref: Option<String>,
    /// An HTTP-like code: 400 malformed, 403 not allowed, 413 too long, 500 internal.
    pub code: u16,
    /// What was wrong, for a person.
    pub msg: String,
}

impl WireError {
    /// The `cmd 22` frame text that tells the client.
    pub fn to_json(&self) -> String {
        Reply::Error {
            cmd: CMD_ERROR,
            client_ref: self.client_ref.as_deref(),
            code: self.code,
            msg: &self.msg,
        }
        .to_json()
    }

    /// A 400 with no reference.
    pub fn malformed(msg: impl Into<String>) -> Self {
        WireError {
            client_ref: None,
            code: 400,
            msg: msg.into(),
        }
    }
}

/// Parses one text frame from a client.
pub fn parse_command(text: &str) -> Result<Command, WireError> {
    let frame: ClientFrame = serde_json::from_str(text)
        .map_err(|e| WireError::malformed(format!("malformed message: {e}")))?;
    frame.try_into()
}

impl TryFrom<ClientFrame> for Command {
    type Error = WireError;

    fn try_from(frame: ClientFrame) -> Result<Command, WireError> {
        let client_ref = frame.client_ref.clone();
        let refuse = |code: u16, msg: &str| WireError {
            client_ref: client_ref.clone(),
            code,
            msg: msg.to_owned(),
        };
        if client_ref.as_ref().is_some_and(|r| r.len() > MAX_REF_LEN) {
            return Err(refuse(413, "ref is longer than 64 bytes"));
        }
        let to = match frame.cmd {
            Some(CMD_HEARTBEAT) => return Ok(Command::Heartbeat),
            Some(CMD_SYNC) => {
                return Ok(Command::Sync {
                    after: frame.id.unwrap_or(0).max(0),
                });
            }
            Some(CMD_SINGLE) => Peer::User,
            Some(CMD_GROUP) => Peer::Group,
            Some(other) => return Err(refuse(400, &format!("unknown cmd {other}"))),
            None => return Err(refuse(400, "cmd is missing")),
        };
        let dst = match frame.dstid {
            Some(id) if id > 0 => id,
            _ => return Err(refuse(400, "dstid must be a positive id")),
        };
        let media = frame.media.unwrap_or(1);
        let content = frame.content.unwrap_or_default();
        let url = frame.url.unwrap_or_default();
        let pic = frame.pic.unwrap_or_default();
        let memo = frame.memo.unwrap_or_default();
        if !(1..=99).contains(&media) {
            return Err(refuse(400, "media must be between 1 and 99"));
        }
        if content.chars().count() > MAX_CONTENT_CHARS {
            return Err(refuse(413, "content is longer than 4000 characters"));
        }
        if url.len() > MAX_URL_LEN || pic.len() > MAX_URL_LEN {
            return Err(refuse(413, "url or pic is longer than 1024 bytes"));
        }
        if memo.chars().count() > MAX_MEMO_CHARS {
            return Err(refuse(413, "memo is longer than 140 characters"));
        }
        if content.trim().is_empty() && url.is_empty() && pic.is_empty() {
            return Err(refuse(400, "a message needs content or a url"));
        }
        Ok(Command::Send(Outgoing {
            to: to(dst),
            media,
            content,
            pic,
            url,
            memo,
            amount: frame.amount.unwrap_or(0),
            client_ref,
        }))
    }
}

/// A stored message as delivered: fastIM's fields plus `createat` (unix ms).
#[derive(Debug, Serialize)]
pub struct Delivery<'a> {
    id: i64,
    userid: i64,
    cmd: i64,
    dstid: i64,
    media: i64,
    content: &'a str,
    pic: &'a str,
    url: &'a str,
    memo: &'a str,
    amount: i64,
    createat: i64,
}

impl<'a> From<&'a StoredMessage> for Delivery<'a> {
    fn from(m: &'a StoredMessage) -> Self {
        Delivery {
            id: m.id,
            userid: m.sender_id,
            cmd: m.cmd,
            dstid: m.dst_id,
            media: m.media,
            content: &m.content,
            pic: &m.pic,
            url: &m.url,
            memo: &m.memo,
            amount: m.amount,
            createat: m.created_at,
        }
    }
}

/// Frames the server sends besides deliveries.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply<'a> {
    /// `{"cmd":0}`.
    Heartbeat {
        /// Always [`CMD_HEARTBEAT`].
        cmd: i64,
    },
    /// `{"cmd":21,"ref":..,"id":..,"createat":..}`: the message is stored.
    Ack {
        /// Always [`CMD_ACK`].
        cmd: i64,
        /// The client's reference.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        client_ref: Option<&'a str>,
        /// Server id.
        id: i64,
        /// Server time, unix ms.
        createat: i64,
    },
    /// `{"cmd":22,"ref":..,"code":..,"msg":..}`: the frame was refused.
    Error {
        /// Always [`CMD_ERROR`].
        cmd: i64,
        /// The client's reference, when the frame had one.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        client_ref: Option<&'a str>,
        /// 400, 403, 413 or 500.
        code: u16,
        /// What was wrong.
        msg: &'a str,
    },
    /// `{"cmd":23,"id":..,"more":..,"oldest":..}`: the sync reply is complete up to `id`.
    SyncDone {
        /// Always [`CMD_SYNC_DONE`].
        cmd: i64,
        /// The last id sent (or the requested one when nothing was newer).
        id: i64,
        /// Whether more messages wait: send another sync from `id`.
        more: bool,
        /// Where history starts: retention (`--history-days`) has removed every message
        /// with a smaller id; 1 while it has removed none. A client that synced from
        /// an id below `oldest - 1` may have missed messages that are gone.
        oldest: i64,
    },
}

impl Reply<'_> {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The JSON text of a delivery.
pub fn delivery_json(message: &StoredMessage) -> String {
    serde_json::to_string(&Delivery::from(message)).unwrap_or_default()
}

/// Accepts a number or a numeric string (some clients send ids as strings).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrString {
        Num(i64),
        Float(f64),
        Text(String),
    }
    Ok(match Option::<NumOrString>::deserialize(d)? {
        None => None,
        Some(NumOrString::Num(n)) => Some(n),
        Some(NumOrString::Float(f)) if f.fract() == 0.0 && f.abs() < 9e15 => Some(f as i64),
        Some(NumOrString::Float(_)) => return Err(serde::de::Error::custom("expected an integer")),
        Some(NumOrString::Text(s)) if s.trim().is_empty() => None,
        Some(NumOrString::Text(s)) => Some(
            s.trim()
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("expected an integer, got {s:?}")))?,
        ),
    })
}

/// Accepts a string or a number as a reference.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StringOrNum {
        Text(String),
        Num(serde_json::Number),
    }
    Ok(match Option::<StringOrNum>::deserialize(d)? {
        None => None,
        Some(StringOrNum::Text(s)) => Some(s),
        Some(StringOrNum::Num(n)) => Some(n.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fastim_single_message_ignores_the_claimed_sender() {
        let text = r#"{"id":0,"userid":999,"cmd":10,"dstid":3,"media":1,"content":"hello","pic":"","url":"","memo":"","amount":0}"#;
        let Ok(Command::Send(out)) = parse_command(text) else {
            panic!("a valid message");
        };
        assert_eq!(out.to, Peer::User(3));
        assert_eq!(out.content, "hello");
        assert_eq!(out.into_new_message(7).sender_id, 7);
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command(r#"{"cmd":0}"#), Ok(Command::Heartbeat));
        assert_eq!(
            parse_command(r#"{"cmd":20,"id":"57"}"#),
            Ok(Command::Sync { after: 57 })
        );
        let Ok(Command::Send(out)) =
            parse_command(r#"{"cmd":"11","dstid":"4","media":4,"url":"/asset/1.gif","ref":12}"#)
        else {
            panic!("a valid group image");
        };
        assert_eq!(
            (out.to, out.media, out.client_ref.as_deref()),
            (Peer::Group(4), 4, Some("12"))
        );
    }

    #[test]
    fn refusals_keep_the_reference() {
        let cases = [
            (r#"{"cmd":99,"ref":"a"}"#, 400, "unknown cmd 99"),
            (r#"{"ref":"a"}"#, 400, "cmd is missing"),
            (
                r#"{"cmd":10,"ref":"a","content":"x"}"#,
                400,
                "dstid must be a positive id",
            ),
            (
                r#"{"cmd":10,"dstid":2,"ref":"a"}"#,
                400,
                "a message needs content or a url",
            ),
        ];
        for (text, code, msg) in cases {
            let err = parse_command(text).expect_err(text);
            assert_eq!(
                (err.client_ref.as_deref(), err.code, err.msg.as_str()),
                (Some("a"), code, msg)
            );
        }
        let long = format!(
            r#"{{"cmd":10,"dstid":2,"ref":"r","content":"{}"}}"#,
            "é".repeat(4001)
        );
        assert_eq!(parse_command(&long).map_err(|e| e.code), Err(413));
        assert_eq!(parse_command("{not json").map_err(|e| e.code), Err(400));
        assert_eq!(
            parse_command(r#"{"cmd":10,"dstid":1.5}"#).map_err(|e| e.code),
            Err(400)
        );
    }

    #[test]
    fn replies_serialize_with_fastim_names() {
        let ack = Reply::Ack {
            cmd: CMD_ACK,
            client_ref: Some("c1"),
            id: 5,
            createat: 9,
        };
        assert_eq!(
            ack.to_json(),
            r#"{"cmd":21,"ref":"c1","id":5,"createat":9}"#
        );
        let done = Reply::SyncDone {
            cmd: CMD_SYNC_DONE,
            id: 58,
            more: false,
            oldest: 31,
        };
        assert_eq!(
            done.to_json(),
            r#"{"cmd":23,"id":58,"more":false,"oldest":31}"#
        );
        let m = StoredMessage {
            id: 5,
            sender_id: 2,
            cmd: 10,
            dst_id: 3,
            media: 1,
            content: "hi".into(),
            pic: String::new(),
            url: String::new(),
            memo: String::new(),
            amount: 0,
            client_ref: None,
            created_at: 9,
        };
        assert_eq!(
            delivery_json(&m),
            r#"{"id":5,"userid":2,"cmd":10,"dstid":3,"media":1,"content":"hi","pic":"","url":"","memo":"","amount":0,"createat":9}"#
        );
    }
}

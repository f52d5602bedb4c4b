//! The frames the server sends on the `/chat` WebSocket, as JSON text.
//!
//! Field names are fastIM's (`id, userid, cmd, dstid, media, content, pic, url, memo,
//! amount`), so fastIM clients keep working; the server adds `createat` and the
//! reliability and live commands (ack, error, sync, typing, presence). A message's
//! JSON is the `Serialize` of [`Message`], the same type the store saves: one
//! format for deliveries, sync replies and `/message/history` rows. What clients
//! send is parsed in `im/cmd/`.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::cmd::code::ERROR;
use super::presence::PresenceEntry;
use crate::store::{Message, Quote};

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
            cmd: ERROR,
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

/// A message as delivered: fastIM's fields plus `createat` (unix ms); `userid` is
/// the sender, `cmd` and `dstid` say the conversation. The client's `ref` is not sent
/// ([`SeenBy`] sends it to its sender).
impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_message(self, false, s)
    }
}

/// A message as `reader` gets it: with the client's `ref` when `reader` sent it (its
/// other devices, sync, history), so that a client knows its own message by the
/// reference it gave; nobody else ever sees a sender's `ref`.
pub struct SeenBy<'a> {
    /// The message.
    pub message: &'a Message,
    /// Who reads it.
    pub reader: i64,
}

impl Serialize for SeenBy<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_message(self.message, self.message.sender_id == self.reader, s)
    }
}

/// fastIM's fields, then `createat`, the `ref` when `with_ref`, and the recall, edit
/// and reply fields that apply.
fn serialize_message<S: Serializer>(
    this: &Message,
    with_ref: bool,
    s: S,
) -> Result<S::Ok, S::Error> {
    let client_ref = this.client_ref.as_deref().filter(|_| with_ref);
    let (cmd, dstid) = this.to.cmd_and_dst();
    let mut m = s.serialize_struct("Message", 16)?;
    m.serialize_field("id", &this.id)?;
    m.serialize_field("userid", &this.sender_id)?;
    m.serialize_field("cmd", &cmd)?;
    m.serialize_field("dstid", &dstid)?;
    m.serialize_field("media", &this.media)?;
    m.serialize_field("content", &this.content)?;
    m.serialize_field("pic", &this.pic)?;
    m.serialize_field("url", &this.url)?;
    m.serialize_field("memo", &this.memo)?;
    m.serialize_field("amount", &this.amount)?;
    m.serialize_field("createat", &this.created_at)?;
    if let Some(r) = client_ref {
        m.serialize_field("ref", r)?;
    }
    if this.recalled_at != 0 {
        m.serialize_field("recalled", &true)?;
    }
    if this.edited_at != 0 {
        m.serialize_field("edited", &this.edited_at)?;
    }
    if this.reply_to != 0 {
        m.serialize_field("reply", &this.reply_to)?;
        if let Some(q) = &this.quote {
            m.serialize_field("quote", &QuoteJson(q))?;
        }
    }
    m.end()
}

/// `{"id":..,"userid":..,"content":..,"media":..}`, with `"recalled":true` once the
/// quoted message is recalled.
struct QuoteJson<'a>(&'a Quote);

impl Serialize for QuoteJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let q = self.0;
        let mut m = s.serialize_struct("Quote", 5)?;
        m.serialize_field("id", &q.id)?;
        m.serialize_field("userid", &q.sender_id)?;
        m.serialize_field("content", &q.content)?;
        m.serialize_field("media", &q.media)?;
        if q.recalled {
            m.serialize_field("recalled", &true)?;
        }
        m.end()
    }
}

/// Frames the server sends besides deliveries.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Reply<'a> {
    /// `{"cmd":0}`.
    Heartbeat {
        /// Always `code::HEARTBEAT`.
        cmd: i64,
    },
    /// `{"cmd":21,"ref":..,"id":..,"createat":..}`: the message is stored.
    Ack {
        /// Always `code::ACK`.
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
        /// Always `code::ERROR`.
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
        /// Always `code::SYNC_DONE`.
        cmd: i64,
        /// The last id sent (or the requested one when nothing was newer).
        id: i64,
        /// Whether more messages wait: send another sync from `id`.
        more: bool,
        /// Where history starts: retention (`--history-days`) has removed every message
        /// with a smaller id; 1 while it has removed none. A client that synced from
        /// an id below `oldest - 1` may have missed messages that are gone.
        oldest: i64,
        /// The change `seq` to sync from next time, when the sync asked for changes.
        #[serde(skip_serializing_if = "Option::is_none")]
        changes: Option<i64>,
    },
    /// `{"cmd":12|13,"userid":..,"dstid":..,"ttl":..}`: `userid` is typing to you
    /// (12, `dstid` is you) or in group `dstid` (13).
    Typing {
        /// `TYPING_SINGLE` or `TYPING_GROUP`.
        cmd: i64,
        /// Who types.
        userid: i64,
        /// The recipient user or the group, as in a message.
        dstid: i64,
        /// How long to show it, in milliseconds, unless a message from them comes first.
        ttl: u32,
    },
    /// `{"cmd":14|15,"userid":..,"dstid":..,"id":..}`: `userid` has read the
    /// conversation with `dstid` (14: a user, 15: a group) up to message `id`.
    Read {
        /// `READ_SINGLE` or `READ_GROUP`.
        cmd: i64,
        /// The reader.
        userid: i64,
        /// The other side (14) or the group (15), from the reader's side.
        dstid: i64,
        /// The reader's marker: the newest message read.
        id: i64,
    },
    /// `{"cmd":24,"presence":[{"userid":..,"online":..,"lastseen":..}]}`.
    Presence {
        /// Always `PRESENCE`.
        cmd: i64,
        /// Users whose state this tells.
        presence: &'a [PresenceEntry],
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
pub fn delivery_json(message: &Message) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

/// The JSON text of a delivery to `reader`: with its `ref` when `reader` sent it.
pub fn delivery_json_for(message: &Message, reader: i64) -> String {
    serde_json::to_string(&SeenBy { message, reader }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::cmd::code::{ACK, SYNC_DONE};
    use crate::store::Peer;

    #[test]
    fn replies_serialize_with_fastim_names() {
        let ack = Reply::Ack {
            cmd: ACK,
            client_ref: Some("c1"),
            id: 5,
            createat: 9,
        };
        assert_eq!(
            ack.to_json(),
            r#"{"cmd":21,"ref":"c1","id":5,"createat":9}"#
        );
        let done = Reply::SyncDone {
            cmd: SYNC_DONE,
            id: 58,
            more: false,
            oldest: 31,
            changes: None,
        };
        assert_eq!(
            done.to_json(),
            r#"{"cmd":23,"id":58,"more":false,"oldest":31}"#
        );
        let m = Message {
            id: 5,
            content: "hi".into(),
            client_ref: Some("not sent".into()),
            created_at: 9,
            ..Message::new(2, Peer::User(3))
        };
        assert_eq!(
            delivery_json(&m),
            r#"{"id":5,"userid":2,"cmd":10,"dstid":3,"media":1,"content":"hi","pic":"","url":"","memo":"","amount":0,"createat":9}"#
        );
        // Its sender reads it with the ref (other devices, sync, history); nobody else.
        let own = delivery_json_for(&m, 2);
        assert!(own.contains(r#""createat":9,"ref":"not sent"}"#), "{own}");
        assert_eq!(delivery_json_for(&m, 3), delivery_json(&m));
        let g = Message {
            to: Peer::Group(7),
            ..m
        };
        assert!(delivery_json(&g).contains(r#""cmd":11,"dstid":7,"#));
        let reply = Message {
            reply_to: 4,
            quote: Some(Quote::new(4, 3, &"x".repeat(150), 1, false)),
            edited_at: 12,
            ..g.clone()
        };
        let json = delivery_json(&reply);
        assert!(
            json.ends_with(&format!(
                r#""createat":9,"edited":12,"reply":4,"quote":{{"id":4,"userid":3,"content":"{}","media":1}}}}"#,
                "x".repeat(100)
            )),
            "{json}"
        );
        let recalled = Message {
            recalled_at: 13,
            quote: Some(Quote::new(4, 3, "", 1, true)),
            ..reply
        };
        let json = delivery_json(&recalled);
        assert!(json.contains(r#""recalled":true,"edited":12"#), "{json}");
        assert!(json.contains(r#""media":1,"recalled":true}"#), "{json}");
    }
}

//! `cmd 16` and `17`: the sender recalls a message, or edits its text.
//!
//! `{"cmd":16,"id":58,"ref":"r1"}` recalls message 58; `{"cmd":17,"id":58,
//! "content":"new text","ref":"r2"}` replaces its text. Only the fields' shape is
//! checked here; whose message it is, its window, its media and whether it was recalled
//! are checked by the chat writer inside its transaction (`store/changes.rs`), which
//! acks the requester like a send (`cmd` 21) and then tells every connection of the
//! conversation ([`event_json`]). Each waits for the writer as a message does, so it
//! counts against the connection's messages in flight.

use serde::Serialize;

use super::code::{EDIT, RECALL};
use super::send::MAX_CONTENT_CHARS;
use super::{ClientFrame, Produced};
use crate::im::wire::WireError;
use crate::store::{Change, Changed, Edit};

/// A recall or an edit, with its requester still unknown (0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeMessage(pub Change);

impl ChangeMessage {
    /// `id`, and for an edit `content` with a send's limits.
    pub(super) fn parse(frame: ClientFrame) -> Result<ChangeMessage, WireError> {
        let id = match frame.id {
            Some(id) if id > 0 => id,
            _ => return Err(frame.refuse(400, "id must be a positive message id")),
        };
        let edit = if frame.cmd == Some(RECALL) {
            Edit::Recall
        } else {
            let content = frame.content.clone().unwrap_or_default();
            if content.chars().count() > MAX_CONTENT_CHARS {
                return Err(frame.refuse(413, "content is longer than 4000 characters"));
            }
            if content.trim().is_empty() {
                return Err(frame.refuse(400, "an edit needs content"));
            }
            Edit::Content(content)
        };
        Ok(ChangeMessage(Change {
            user: 0,
            id,
            edit,
            client_ref: frame.client_ref,
        }))
    }

    /// The change, asked by the connection's user.
    pub fn apply(self, user: i64) -> Produced {
        let mut change = self.0;
        change.user = user;
        Produced::Change(change)
    }
}

/// The live frame that tells the conversation about a changed message.
#[derive(Serialize)]
struct Event<'a> {
    cmd: i64,
    id: i64,
    userid: i64,
    /// The message's own `cmd`: 10 one-to-one, 11 group.
    chat: i64,
    dstid: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    recalled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edited: Option<i64>,
    /// The change's place in the change log (the sync cursor `changes`).
    seq: i64,
}

/// `{"cmd":16,"id":..,"userid":..,"chat":10,"dstid":..,"recalled":true,"seq":..}`
/// for a recalled message, `{"cmd":17,…,"content":..,"edited":<ms>,"seq":..}` for an
/// edited one: live, and in a sync that carries changes.
pub fn event_json(changed: &Changed) -> String {
    let m = &changed.message;
    let (chat, dstid) = m.to.cmd_and_dst();
    let recalled = m.recalled_at != 0;
    let event = Event {
        cmd: if recalled { RECALL } else { EDIT },
        id: m.id,
        userid: m.sender_id,
        chat,
        dstid,
        recalled,
        content: (!recalled).then_some(m.content.as_str()),
        edited: (!recalled).then_some(m.edited_at),
        seq: changed.seq,
    };
    serde_json::to_string(&event).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::cmd::{Command, parse};
    use crate::store::{Message, Peer};

    #[test]
    fn parse_checks_the_id_and_the_text() {
        let Ok(Command::Change(ChangeMessage(c))) = parse(r#"{"cmd":16,"id":"58","ref":"r"}"#)
        else {
            panic!("a recall");
        };
        assert_eq!(
            (c.id, c.edit, c.client_ref.as_deref()),
            (58, Edit::Recall, Some("r"))
        );
        let Ok(Command::Change(ChangeMessage(c))) = parse(r#"{"cmd":17,"id":58,"content":"new"}"#)
        else {
            panic!("an edit");
        };
        assert_eq!(c.edit, Edit::Content("new".into()));
        for (bad, code) in [
            (r#"{"cmd":16}"#, 400),
            (r#"{"cmd":16,"id":0}"#, 400),
            (r#"{"cmd":17,"id":5}"#, 400),
            (r#"{"cmd":17,"id":5,"content":"  "}"#, 400),
        ] {
            assert_eq!(parse(bad).map_err(|e| e.code), Err(code), "{bad}");
        }
        let long = format!(r#"{{"cmd":17,"id":5,"content":"{}"}}"#, "é".repeat(4001));
        assert_eq!(parse(&long).map_err(|e| e.code), Err(413));
    }

    #[test]
    fn events_name_the_conversation() {
        let m = Message {
            id: 9,
            recalled_at: 5,
            ..Message::new(2, Peer::Group(7))
        };
        assert_eq!(
            event_json(&Changed { message: m, seq: 4 }),
            r#"{"cmd":16,"id":9,"userid":2,"chat":11,"dstid":7,"recalled":true,"seq":4}"#
        );
        let m = Message {
            id: 9,
            content: "new".into(),
            edited_at: 6,
            ..Message::new(2, Peer::User(3))
        };
        assert_eq!(
            event_json(&Changed { message: m, seq: 5 }),
            r#"{"cmd":17,"id":9,"userid":2,"chat":10,"dstid":3,"content":"new","edited":6,"seq":5}"#
        );
    }
}

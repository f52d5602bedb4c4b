//! `cmd 10` and `11`: a message to store and deliver.
//!
//! Its rights are checked here, from the loop's index, as soon as it is read: a
//! refused message never waits behind others for the writer (which checks again
//! inside its transaction, `im/commit.rs`).

use super::code::GROUP;
use super::{ClientFrame, Ctx, Produced, refused};
use crate::store::{Message, Peer, SendRight};

/// Longest `content`, in characters.
pub const MAX_CONTENT_CHARS: usize = 4000;
/// Longest `url` or `pic`, in bytes.
pub const MAX_URL_LEN: usize = 1024;
/// Longest `memo`, in characters.
pub const MAX_MEMO_CHARS: usize = 140;

/// A message to store, with its sender still unknown (0): [`SendMessage::apply`] sets it
/// from the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendMessage(pub Message);

impl SendMessage {
    /// Checks the fields' ranges and lengths.
    pub(super) fn parse(frame: ClientFrame) -> Result<SendMessage, super::WireError> {
        let dst = frame.dst()?;
        let to = match frame.cmd {
            Some(GROUP) => Peer::Group(dst),
            _ => Peer::User(dst),
        };
        let media = frame.media.unwrap_or(1);
        if !(1..=99).contains(&media) {
            return Err(frame.refuse(400, "media must be between 1 and 99"));
        }
        let reply_to = match frame.reply {
            None => 0,
            Some(id) if id > 0 => id,
            Some(_) => return Err(frame.refuse(400, "reply must be a positive message id")),
        };
        let ClientFrame {
            content,
            pic,
            url,
            memo,
            amount,
            client_ref,
            ..
        } = frame;
        let (content, url, pic, memo) = (
            content.unwrap_or_default(),
            url.unwrap_or_default(),
            pic.unwrap_or_default(),
            memo.unwrap_or_default(),
        );
        let refuse = |code: u16, msg: &str| super::WireError {
            client_ref: client_ref.clone(),
            code,
            msg: msg.to_owned(),
        };
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
        Ok(SendMessage(Message {
            media,
            content,
            pic,
            url,
            memo,
            amount: amount.unwrap_or(0),
            client_ref,
            reply_to,
            ..Message::new(0, to)
        }))
    }

    /// The message from the connection's user, if they may send it.
    pub fn apply(self, ctx: &mut Ctx<'_>) -> Produced {
        let mut message = self.0;
        message.sender_id = ctx.user;
        match ctx.index.right(ctx.user, message.to) {
            SendRight::Allowed => Produced::Store(message),
            right => Produced::Reply(refused(right, message.client_ref).to_json()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::cmd::{Command, parse};
    use crate::im::index::ChatIndex;

    #[test]
    fn the_sender_is_the_connection_not_the_frame() {
        let text = r#"{"id":0,"userid":999,"cmd":10,"dstid":3,"media":1,"content":"hello","pic":"","url":"","memo":"","amount":0}"#;
        let Ok(Command::Send(send)) = parse(text) else {
            panic!("a valid message");
        };
        let mut index = ChatIndex::new([]).with_friends([(7, 3)]);
        let mut ctx = Ctx {
            conn: 1,
            user: 7,
            index: &mut index,
            now: std::time::Instant::now(),
        };
        let Produced::Store(m) = send.clone().apply(&mut ctx) else {
            panic!("a friend may be written to");
        };
        assert_eq!(
            (m.sender_id, m.to, m.content.as_str()),
            (7, Peer::User(3), "hello")
        );
        ctx.user = 8;
        let Produced::Reply(refusal) = send.apply(&mut ctx) else {
            panic!("a stranger may not");
        };
        assert!(refusal.contains(r#""code":403"#), "{refusal}");
    }
}

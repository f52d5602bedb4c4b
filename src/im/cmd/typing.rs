//! `cmd 12` and `13`: "I am typing" in a one-to-one conversation or a group.
//!
//! Never stored. Forwarded only to connections that asked for live events (`cmd`
//! 24) of the other side, or of the group's other members: not to the sender's own
//! devices, never to someone the sender may not write to (the same rights as
//! messages). The receiver shows it for [`TYPING_TTL_MS`] or until a message from
//! that sender arrives: the server keeps no timer. Each connection gets at most one
//! notice forwarded per conversation per [`TYPING_INTERVAL`], and at most
//! [`MAX_CONVERSATIONS`] conversations in that time; the excess is dropped silently
//! (a typing notice is a hint, and an error per keystroke would be noise).

use std::time::{Duration, Instant};

use super::code::{TYPING_GROUP, TYPING_SINGLE};
use super::{ClientFrame, Ctx, Fanout, Produced, refused};
use crate::im::wire::Reply;
use crate::store::{Peer, SendRight};

/// How long a receiver shows "typing" after a notice, in milliseconds (the frame's `ttl`).
pub const TYPING_TTL_MS: u32 = 5_000;

/// At most one notice per conversation per connection is forwarded in this time.
pub const TYPING_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many conversations' notices per connection per [`TYPING_INTERVAL`].
pub const MAX_CONVERSATIONS: usize = 8;

/// `{"cmd":12,"dstid":3}` (one-to-one) or `{"cmd":13,"dstid":7}` (group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Typing {
    /// The conversation.
    pub to: Peer,
    /// The client's reference, for an error.
    pub client_ref: Option<String>,
}

impl Typing {
    /// `dstid` and which kind of conversation.
    pub(super) fn parse(frame: &ClientFrame) -> Result<Typing, super::WireError> {
        let dst = frame.dst()?;
        let to = if frame.cmd == Some(TYPING_GROUP) {
            Peer::Group(dst)
        } else {
            Peer::User(dst)
        };
        Ok(Typing {
            to,
            client_ref: frame.client_ref.clone(),
        })
    }

    /// The notice for the other side's watching connections, within the rate limit.
    pub fn apply(self, ctx: &mut Ctx<'_>) -> Produced {
        let right = ctx.index.right(ctx.user, self.to);
        if right != SendRight::Allowed {
            return Produced::Reply(refused(right, self.client_ref).to_json());
        }
        if self.to == Peer::User(ctx.user) || !ctx.index.admit_typing(ctx.conn, self.to, ctx.now) {
            return Produced::Nothing;
        }
        let to = ctx.index.typing_audience(ctx.user, self.to);
        if to.is_empty() {
            return Produced::Nothing;
        }
        let (cmd, dstid) = match self.to {
            Peer::User(id) => (TYPING_SINGLE, id),
            Peer::Group(id) => (TYPING_GROUP, id),
        };
        let text = Reply::Typing {
            cmd,
            userid: ctx.user,
            dstid,
            ttl: TYPING_TTL_MS,
        }
        .to_json();
        Produced::FanOut(vec![Fanout { to, text }])
    }
}

/// One connection's recent typing notices: the rate limit's state, held only by
/// connections that type, at most [`MAX_CONVERSATIONS`] entries.
#[derive(Debug, Default)]
pub struct TypingWindow {
    sent: Vec<(Peer, Instant)>,
}

impl TypingWindow {
    /// Whether a notice for `to` may go out at `now`; if so it is counted.
    pub fn admit(&mut self, to: Peer, now: Instant) -> bool {
        self.sent
            .retain(|(_, at)| now.saturating_duration_since(*at) < TYPING_INTERVAL);
        if self.sent.len() >= MAX_CONVERSATIONS || self.sent.iter().any(|(p, _)| *p == to) {
            return false;
        }
        self.sent.push((to, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::index::ChatIndex;

    #[test]
    fn one_notice_per_conversation_per_interval_and_a_few_conversations() {
        let t0 = Instant::now();
        let mut w = TypingWindow::default();
        assert!(w.admit(Peer::User(2), t0));
        assert!(!w.admit(Peer::User(2), t0 + Duration::from_millis(999)));
        assert!(w.admit(Peer::Group(2), t0), "another conversation");
        assert!(w.admit(Peer::User(2), t0 + TYPING_INTERVAL));
        let t1 = t0 + Duration::from_secs(5);
        for id in 0..MAX_CONVERSATIONS as i64 {
            assert!(w.admit(Peer::User(100 + id), t1));
        }
        assert!(
            !w.admit(Peer::User(99), t1),
            "too many conversations at once"
        );
        assert_eq!(w.sent.len(), MAX_CONVERSATIONS);
    }

    #[test]
    fn typing_reaches_the_watching_connections_of_the_other_side_only() {
        // 1 and 2 are friends; group 100 has 1, 2, 3; 4 is a stranger.
        let mut index = ChatIndex::new([(100, 1), (100, 2), (100, 3)]).with_friends([(1, 2)]);
        for (user, conn) in [(1, 10), (1, 11), (2, 20), (2, 21), (3, 30), (4, 40)] {
            index.connect(user, conn);
        }
        for conn in [11, 20, 30, 40] {
            index.watch(conn, Instant::now(), Duration::ZERO);
        }
        let now = Instant::now();
        let mut ctx = Ctx {
            conn: 10,
            user: 1,
            index: &mut index,
            now,
        };
        let typing = |to| Typing {
            to,
            client_ref: None,
        };
        let Produced::FanOut(f) = typing(Peer::User(2)).apply(&mut ctx) else {
            panic!("to a friend");
        };
        assert_eq!(f[0].to, [20], "21 did not ask for live events");
        assert_eq!(f[0].text, r#"{"cmd":12,"userid":1,"dstid":2,"ttl":5000}"#);
        assert_eq!(typing(Peer::User(2)).apply(&mut ctx), Produced::Nothing);
        let Produced::FanOut(f) = typing(Peer::Group(100)).apply(&mut ctx) else {
            panic!("to the group");
        };
        let mut to = f[0].to.clone();
        to.sort_unstable();
        assert_eq!(to, [20, 30], "not 11, the sender's own other device");
        let Produced::Reply(e) = typing(Peer::User(4)).apply(&mut ctx) else {
            panic!("not to a stranger");
        };
        assert!(e.contains(r#""code":403"#), "{e}");
        ctx.user = 4;
        ctx.conn = 40;
        let Produced::Reply(e) = typing(Peer::Group(100)).apply(&mut ctx) else {
            panic!("not to a group one is not in");
        };
        assert!(e.contains(r#""code":403"#), "{e}");
    }
}

//! `cmd 14` and `15`: "I have read this conversation up to message `id`".
//!
//! `{"cmd":14,"dstid":3,"id":58}` (one-to-one with user 3) or `{"cmd":15,"dstid":7,"id":58}`
//! (group 7), with the rights of a message: a friend (or oneself), a group one is a
//! member of. The marker is stored by the chat writer (`store/reads.rs`: it only moves
//! forward, and is clamped to the newest message of the conversation at or before
//! `id`), never on the loop; once stored, [`fanout`] tells the reader's watching
//! connections (so unread counts clear on every device) and the other side: the
//! friend's watching connections ("seen"), or those of the group's online members,
//! who count for themselves how many have read a message ("seen by N"). Nothing is
//! sent when the marker did not move.
//!
//! Per connection, a conversation's marker is handed to the writer at most once per
//! [`READ_INTERVAL`]: marks that come sooner are coalesced (the largest id is kept)
//! and stored when the interval ends, or when the connection closes. At most
//! [`MAX_READ_CONVERSATIONS`] conversations may be marked per connection in that
//! time; more is refused with a 429 (the marker of a refused mark is not stored).

use std::time::{Duration, Instant};

use super::code::{READ_GROUP, READ_SINGLE};
use super::{ClientFrame, Ctx, Fanout, Produced, refused};
use crate::im::index::ChatIndex;
use crate::im::wire::{Reply, WireError};
use crate::store::{Peer, ReadMark, SendRight};

/// A connection's marks of one conversation reach the writer at most this often.
pub const READ_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many conversations marked per connection per [`READ_INTERVAL`].
pub const MAX_READ_CONVERSATIONS: usize = 32;

/// `{"cmd":14,"dstid":3,"id":58}` or `{"cmd":15,"dstid":7,"id":58}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkRead {
    /// The conversation.
    pub peer: Peer,
    /// The newest message read, as the client says.
    pub id: i64,
    /// The client's reference, for an error.
    pub client_ref: Option<String>,
}

impl MarkRead {
    /// `dstid`, `id` and which kind of conversation.
    pub(super) fn parse(frame: &ClientFrame) -> Result<MarkRead, WireError> {
        let dst = frame.dst()?;
        let peer = if frame.cmd == Some(READ_GROUP) {
            Peer::Group(dst)
        } else {
            Peer::User(dst)
        };
        match frame.id {
            Some(id) if id > 0 => Ok(MarkRead {
                peer,
                id,
                client_ref: frame.client_ref.clone(),
            }),
            _ => Err(frame.refuse(400, "id must be a positive message id")),
        }
    }

    /// Queues the mark for the writer, within the rate limit, if the user may see
    /// the conversation.
    pub fn apply(self, ctx: &mut Ctx<'_>) -> Produced {
        let right = ctx.index.right(ctx.user, self.peer);
        if right != SendRight::Allowed {
            return Produced::Reply(refused(right, self.client_ref).to_json());
        }
        let mark = ReadMark {
            user: ctx.user,
            peer: self.peer,
            id: self.id,
        };
        if ctx.index.admit_read(ctx.conn, mark, ctx.now) {
            return Produced::Nothing;
        }
        let e = WireError {
            client_ref: self.client_ref,
            code: 429,
            msg: format!(
                "more than {MAX_READ_CONVERSATIONS} conversations marked read within a second; \
                 mark this one again later"
            ),
        };
        Produced::Reply(e.to_json())
    }
}

/// The frame that tells who a stored marker concerns, and to whom it goes: the
/// reader's watching connections and the other side's (the friend's, or every online
/// member's in a group); `None` if nobody watches.
pub fn fanout(index: &ChatIndex, mark: ReadMark) -> Option<Fanout> {
    let (cmd, dstid) = match mark.peer {
        Peer::User(id) => (READ_SINGLE, id),
        Peer::Group(id) => (READ_GROUP, id),
    };
    let to = index.read_audience(mark.user, mark.peer);
    if to.is_empty() {
        return None;
    }
    let text = Reply::Read {
        cmd,
        userid: mark.user,
        dstid,
        id: mark.id,
    }
    .to_json();
    Some(Fanout { to, text })
}

/// What became of a mark offered to a [`ReadWindow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Store this id now.
    Now(i64),
    /// Kept, to be stored when the interval ends ([`ReadWindow::due`]).
    Later,
    /// Too many conversations in the interval: refused.
    TooMany,
}

/// One connection's recent marks: the rate limit's state, at most
/// [`MAX_READ_CONVERSATIONS`] entries.
#[derive(Debug, Default)]
pub struct ReadWindow {
    /// `(conversation, when its mark was last handed on, the mark waiting)`.
    entries: Vec<(Peer, Instant, Option<i64>)>,
}

impl ReadWindow {
    /// Offers a mark of `peer` up to `id` at `now`.
    pub fn admit(&mut self, peer: Peer, id: i64, now: Instant) -> Admit {
        self.entries
            .retain(|(_, at, pending)| pending.is_some() || !expired(*at, now));
        if let Some(entry) = self.entries.iter_mut().find(|(p, _, _)| *p == peer) {
            let id = entry.2.map_or(id, |p| p.max(id));
            if expired(entry.1, now) {
                *entry = (peer, now, None);
                return Admit::Now(id);
            }
            entry.2 = Some(id);
            return Admit::Later;
        }
        if self.entries.len() >= MAX_READ_CONVERSATIONS {
            return Admit::TooMany;
        }
        self.entries.push((peer, now, None));
        Admit::Now(id)
    }

    /// The waiting marks whose interval has ended at `now`, handed on.
    pub fn due(&mut self, now: Instant) -> Vec<(Peer, i64)> {
        let mut out = Vec::new();
        for entry in &mut self.entries {
            if let Some(id) = entry.2.filter(|_| expired(entry.1, now)) {
                out.push((entry.0, id));
                *entry = (entry.0, now, None);
            }
        }
        out
    }

    /// When the next waiting mark is due, if one waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| e.2.is_some())
            .map(|e| e.1 + READ_INTERVAL)
            .min()
    }

    /// Every waiting mark, whatever its time (the connection is going).
    pub fn drain(self) -> impl Iterator<Item = (Peer, i64)> {
        self.entries
            .into_iter()
            .filter_map(|(peer, _, pending)| Some((peer, pending?)))
    }
}

fn expired(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) >= READ_INTERVAL
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::cmd::{Command, parse};

    #[test]
    fn marks_are_coalesced_per_conversation_per_second() {
        let t0 = Instant::now();
        let mut w = ReadWindow::default();
        assert_eq!(w.admit(Peer::User(2), 5, t0), Admit::Now(5));
        assert_eq!(w.admit(Peer::User(2), 9, t0), Admit::Later);
        assert_eq!(w.admit(Peer::User(2), 7, t0), Admit::Later);
        assert_eq!(w.admit(Peer::Group(2), 8, t0), Admit::Now(8));
        assert_eq!(w.next_due(), Some(t0 + READ_INTERVAL));
        assert!(w.due(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(
            w.due(t0 + READ_INTERVAL),
            [(Peer::User(2), 9)],
            "the largest"
        );
        assert_eq!(w.next_due(), None);
        // A mark after a flushed one waits for its own second.
        assert_eq!(w.admit(Peer::User(2), 10, t0 + READ_INTERVAL), Admit::Later);
        let t2 = t0 + 2 * READ_INTERVAL;
        assert_eq!(w.admit(Peer::User(2), 3, t2), Admit::Now(10), "not lost");
        let t5 = t0 + 5 * READ_INTERVAL;
        for id in 0..MAX_READ_CONVERSATIONS as i64 {
            assert_eq!(w.admit(Peer::User(100 + id), 1, t5), Admit::Now(1));
        }
        assert_eq!(w.admit(Peer::User(99), 1, t5), Admit::TooMany);
        assert_eq!(w.admit(Peer::User(100), 4, t5), Admit::Later);
        assert_eq!(w.drain().collect::<Vec<_>>(), [(Peer::User(100), 4)]);
    }

    #[test]
    fn parse_and_rights() {
        assert_eq!(
            parse(r#"{"cmd":15,"dstid":"7","id":"58"}"#),
            Ok(Command::Read(MarkRead {
                peer: Peer::Group(7),
                id: 58,
                client_ref: None
            }))
        );
        for bad in [
            r#"{"cmd":14,"dstid":3}"#,
            r#"{"cmd":14,"dstid":3,"id":0}"#,
            r#"{"cmd":14,"dstid":3,"id":-4}"#,
            r#"{"cmd":14,"id":4}"#,
            r#"{"cmd":14,"dstid":3,"id":99999999999999999999}"#,
        ] {
            assert_eq!(parse(bad).map_err(|e| e.code), Err(400), "{bad}");
        }
        let mut index = ChatIndex::new([(100, 1)]).with_friends([(1, 2)]);
        index.connect(1, 10);
        index.connect(2, 20);
        index.connect(3, 30);
        for conn in [10, 20, 30] {
            index.watch(conn, Instant::now(), Duration::ZERO);
        }
        let mut ctx = Ctx {
            conn: 30,
            user: 3,
            index: &mut index,
            now: Instant::now(),
        };
        let mark = |peer| MarkRead {
            peer,
            id: 5,
            client_ref: Some("r".into()),
        };
        for (peer, code) in [
            (Peer::User(1), 403),
            (Peer::Group(100), 403),
            (Peer::Group(101), 404),
        ] {
            let Produced::Reply(e) = mark(peer).apply(&mut ctx) else {
                panic!("refused");
            };
            assert!(e.contains(&format!(r#""code":{code}"#)), "{e}");
            assert!(e.contains(r#""ref":"r""#), "{e}");
        }
        assert!(ctx.index.take_reads(ctx.now).is_empty(), "nothing stored");
        ctx.user = 1;
        ctx.conn = 10;
        assert_eq!(mark(Peer::User(2)).apply(&mut ctx), Produced::Nothing);
        let marks = ctx.index.take_reads(ctx.now);
        assert_eq!(
            marks,
            [ReadMark {
                user: 1,
                peer: Peer::User(2),
                id: 5
            }]
        );
        let f = fanout(ctx.index, marks[0]).expect("watchers");
        let mut to = f.to.clone();
        to.sort_unstable();
        assert_eq!(to, [10, 20], "the reader's devices and the friend, not 30");
        assert_eq!(f.text, r#"{"cmd":14,"userid":1,"dstid":2,"id":5}"#);
    }
}

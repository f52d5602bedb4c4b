//! `cmd 24` from a client: "send me presence and typing".
//!
//! Presence and typing notices go only to connections that asked (a fastIM client
//! never does, and never sees a frame it does not know). The answer is the current
//! presence of the user's contacts, in one or more `cmd 24` frames of at most
//! [`PRESENCE_CHUNK`] entries: every friend (online or not, with when they were last
//! seen) and every online fellow member of the user's groups. From then on the
//! connection gets each change (`im/presence.rs`). Asking again sends the states
//! again, but not more than once per [`WATCH_AGAIN_AFTER`]: sooner is answered with
//! a 429 error (the answer can be large, and nothing bounds how often a client asks).

use std::time::Duration;

use super::{Ctx, Fanout, Produced};
use crate::im::presence::presence_frames;
use crate::im::wire::WireError;

/// Most entries in one presence frame.
pub const PRESENCE_CHUNK: usize = 500;

/// A connection's contacts' states are sent at most this often.
pub const WATCH_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// `{"cmd":24}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch;

impl Watch {
    /// Marks the connection as watching and answers with its contacts' states.
    pub fn apply(self, ctx: &mut Ctx<'_>) -> Produced {
        if !ctx.index.watch(ctx.conn, ctx.now, WATCH_AGAIN_AFTER) {
            let e = WireError {
                client_ref: None,
                code: 429,
                msg: "presence was sent less than a second ago; ask again later".to_owned(),
            };
            return Produced::Reply(e.to_json());
        }
        let states = ctx.index.presence_of_contacts(ctx.user);
        // Through the fan-out path: the frames leave with this turn's other presence
        // frames, after anything already queued for this socket.
        Produced::FanOut(
            presence_frames(&states)
                .into_iter()
                .map(|text| Fanout {
                    to: vec![ctx.conn],
                    text,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::im::index::ChatIndex;

    #[test]
    fn the_states_are_sent_at_most_once_a_second() {
        let mut index = ChatIndex::new([]).with_friends([(1, 2)]);
        index.connect(1, 10);
        let t0 = Instant::now();
        let mut ctx = Ctx {
            conn: 10,
            user: 1,
            index: &mut index,
            now: t0,
        };
        let Produced::FanOut(f) = Watch.apply(&mut ctx) else {
            panic!("the states");
        };
        assert_eq!(f[0].to, [10]);
        assert_eq!(
            f[0].text,
            r#"{"cmd":24,"presence":[{"userid":2,"online":false,"lastseen":0}]}"#
        );
        ctx.now = t0 + Duration::from_millis(999);
        let Produced::Reply(e) = Watch.apply(&mut ctx) else {
            panic!("too soon");
        };
        assert!(e.contains(r#""code":429"#), "{e}");
        ctx.now = t0 + WATCH_AGAIN_AFTER;
        assert!(matches!(Watch.apply(&mut ctx), Produced::FanOut(_)));
        // A connection that is not online (closing) is not answered.
        ctx.conn = 11;
        assert!(matches!(Watch.apply(&mut ctx), Produced::Reply(_)));
    }
}

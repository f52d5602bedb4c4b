//! `cmd 24` from a client: "send me presence and typing".
//!
//! Presence and typing notices go only to connections that asked (a fastIM client
//! never does, and never sees a frame it does not know). The answer is the current
//! presence of the user's contacts, in one or more `cmd 24` frames of at most
//! [`PRESENCE_CHUNK`] entries: every friend (online or not, with when they were last
//! seen) and every online fellow member of the user's groups. From then on the
//! connection gets each change (`im/presence.rs`). Asking again sends the states again.

use super::{Ctx, Fanout, Produced};
use crate::im::presence::presence_frames;

/// Most entries in one presence frame.
pub const PRESENCE_CHUNK: usize = 500;

/// `{"cmd":24}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch;

impl Watch {
    /// Marks the connection as watching and answers with its contacts' states.
    pub fn apply(self, ctx: &mut Ctx<'_>) -> Produced {
        ctx.index.watch(ctx.conn);
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

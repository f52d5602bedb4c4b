//! The `/chat` endpoint: what a chat client's frames turn into.
//!
//! Each frame is parsed into its command and applied (`im/cmd/`: parsing, rights
//! from the loop's index, what it produces); this module hands what it produced
//! to the loop: replies to the connection, messages to the chat writer (one batch
//! per loop turn), sync reads to the API workers, frames for other connections to
//! the turn's fan-out queue. Nothing here blocks.

use std::time::Instant;

use super::lifecycle::Services;
use super::workers::{ChatWrite, ConnRef, Job, PendingChat, Ticket, Work};
use crate::im::cmd::{self, Ctx, Produced, SyncAfter};
use crate::im::index::ChatIndex;
use crate::im::wire::WireError;
use crate::ws::{Message, PerMessageDeflate};

/// What a chat frame needs from the loop.
pub struct Turn<'a> {
    /// The connection the frame came from.
    pub conn: ConnRef,
    /// Its authenticated user: the sender of anything it sends.
    pub user: i64,
    /// Workers, the writer's budget and the turn's fan-out queue.
    pub services: &'a mut dyn Services,
    /// Who may send to whom.
    pub index: &'a mut ChatIndex,
    /// The connection's permessage-deflate, for replies built elsewhere (sync).
    pub deflate: Option<PerMessageDeflate>,
    /// See [`crate::config::DEFLATE_MIN_BYTES`].
    pub deflate_min_bytes: usize,
}

/// What a frame started, for the connection's budgets, and what to answer at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Nothing that waits for a worker.
    Nothing,
    /// Answer this at once (a heartbeat, or an error: the connection stays open).
    Reply(String),
    /// A message went to the writer; its ack will come.
    Message,
    /// The client asks for a sync; the connection decides when.
    Sync(SyncAfter),
}

/// The 503 a client gets when a queue is full: it may send the same thing again.
const BUSY: &str = "the server is busy; send it again shortly";

/// Handles one message from a chat client, at the loop turn's time `now`.
///
/// Replies are returned, not written: the connection sends them (and refuses to
/// after its close frame).
pub fn on_message(message: Message<'_>, turn: &mut Turn<'_>, now: Instant) -> Sent {
    let text = match message {
        Message::Text(text) => text,
        Message::Binary(_) => {
            let e =
                WireError::malformed("binary messages are not accepted on /chat: send JSON text");
            return Sent::Reply(e.to_json());
        }
    };
    let command = match cmd::parse(text) {
        Ok(command) => command,
        Err(e) => return Sent::Reply(e.to_json()),
    };
    let mut ctx = Ctx {
        conn: turn.conn.key,
        user: turn.user,
        index: turn.index,
        now,
    };
    match command.apply(&mut ctx) {
        Produced::Nothing => Sent::Nothing,
        Produced::Reply(reply) => Sent::Reply(reply),
        Produced::Sync(after) => Sent::Sync(after),
        Produced::FanOut(fanouts) => {
            turn.services.fan_out(fanouts);
            Sent::Nothing
        }
        Produced::Store(message) => {
            let client_ref = message.client_ref.clone();
            submit(turn, ChatWrite::Send(message), client_ref)
        }
        Produced::Change(change) => {
            let client_ref = change.client_ref.clone();
            submit(turn, ChatWrite::Change(change), client_ref)
        }
    }
}

/// Queues a write for the chat writer, within its backlog.
fn submit(turn: &mut Turn<'_>, write: ChatWrite, client_ref: Option<String>) -> Sent {
    let pending = PendingChat {
        conn: turn.conn,
        write,
    };
    if turn.services.submit_chat(pending).is_err() {
        let e = WireError {
            client_ref,
            code: 503,
            msg: BUSY.to_owned(),
        };
        return Sent::Reply(e.to_json());
    }
    Sent::Message
}

/// Sends a sync job to the workers. A full queue is `Err` with the 503 error to
/// answer. The connection keeps `ticket`: a sync whose connection has gone is skipped.
pub fn start_sync(turn: &mut Turn<'_>, sync: SyncAfter, ticket: &Ticket) -> Result<(), String> {
    let job = Job {
        conn: turn.conn,
        ticket: ticket.clone(),
        work: Work::Sync {
            user: turn.user,
            after: sync.after,
            batch: sync.batch,
            changes: sync.changes,
            deflate: turn.deflate,
            min_bytes: turn.deflate_min_bytes,
        },
    };
    if turn.services.submit(job).is_ok() {
        return Ok(());
    }
    let e = WireError {
        client_ref: None,
        code: 503,
        msg: "the server is busy; sync again shortly".to_owned(),
    };
    Err(e.to_json())
}

//! The `/chat` endpoint: what a chat client's frames turn into.
//!
//! Parsing, send rights (from the loop's index) and replies that need nothing but
//! the frame happen here, on the loop. Allowed messages go to the chat writer
//! (one batch per loop turn); sync reads go to the API workers. Nothing here blocks.

use super::lifecycle::Services;
use super::workers::{ConnRef, Job, PendingChat, Ticket, Work};
use crate::im::commit::{Outcome, refusal};
use crate::im::index::ChatIndex;
use crate::im::wire::{self, CMD_HEARTBEAT, Command, Reply, WireError};
use crate::store::SendRight;
use crate::ws::{Message, PerMessageDeflate};

/// What a chat frame needs from the loop.
pub struct Turn<'a> {
    /// The connection the frame came from.
    pub conn: ConnRef,
    /// Its authenticated user: the sender of anything it sends.
    pub user: i64,
    /// Workers and the writer's budget.
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
    /// The client asks for a sync after this id; the connection decides when.
    Sync(i64),
}

/// The 503 a client gets when a queue is full: it may send the same thing again.
const BUSY: &str = "the server is busy; send it again shortly";

/// Handles one message from a chat client.
///
/// Replies are returned, not written: the connection sends them (and refuses to
/// after its close frame).
pub fn on_message(message: Message<'_>, turn: &mut Turn<'_>) -> Sent {
    let text = match message {
        Message::Text(text) => text,
        Message::Binary(_) => {
            let e =
                WireError::malformed("binary messages are not accepted on /chat: send JSON text");
            return Sent::Reply(e.to_json());
        }
    };
    match wire::parse_command(text) {
        Ok(Command::Heartbeat) => Sent::Reply(Reply::Heartbeat { cmd: CMD_HEARTBEAT }.to_json()),
        Ok(Command::Send(outgoing)) => {
            let message = outgoing.into_new_message(turn.user);
            // Refused messages never reach the writer (it checks again in its transaction).
            let right = turn.index.right(turn.user, message.to);
            if right != SendRight::Allowed {
                if let Outcome::Refused { code, msg } = refusal(right) {
                    let e = WireError {
                        client_ref: message.client_ref,
                        code,
                        msg,
                    };
                    return Sent::Reply(e.to_json());
                }
                return Sent::Nothing;
            }
            let client_ref = message.client_ref.clone();
            let pending = PendingChat {
                conn: turn.conn,
                message,
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
        Ok(Command::Sync { after }) => Sent::Sync(after),
        Err(e) => Sent::Reply(e.to_json()),
    }
}

/// Sends a sync job to the workers. A full queue is `Err` with the 503 error to
/// answer. The connection keeps `ticket`: a sync whose connection has gone is skipped.
pub fn start_sync(turn: &mut Turn<'_>, after: i64, ticket: &Ticket) -> Result<(), String> {
    let job = Job {
        conn: turn.conn,
        ticket: ticket.clone(),
        work: Work::Sync {
            user: turn.user,
            after,
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

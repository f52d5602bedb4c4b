//! The `/chat` endpoint: what the loop does with a chat client's frames.
//!
//! Parsing and replies that need nothing but the frame happen here, on the loop.
//! Messages to store are gathered for the chat writer (one batch per loop turn);
//! sync reads go to the API workers. Nothing here blocks.

use super::outbound::Outbound;
use super::workers::{ConnRef, Job, PendingChat, Workers};
use crate::im::wire::{self, CMD_ERROR, CMD_HEARTBEAT, Command, Reply, WireError};
use crate::ws::frame::write_frame;
use crate::ws::{Message, OpCode};

/// What a chat frame needs from the loop.
pub struct ChatTurn<'a> {
    /// The connection the frame came from.
    pub conn: ConnRef,
    /// Its authenticated user: the sender of anything it sends.
    pub user: i64,
    /// Messages to store at the end of this loop turn.
    pub batch: &'a mut Vec<PendingChat>,
    /// Where reads go.
    pub workers: &'a Workers,
}

/// Handles one message from a chat client.
pub fn on_message(message: Message<'_>, turn: &mut ChatTurn<'_>, out: &mut Outbound) {
    let text = match message {
        Message::Text(text) => text,
        Message::Binary(_) => {
            let e =
                WireError::malformed("binary messages are not accepted on /chat: send JSON text");
            return reply_error(&e, out);
        }
    };
    match wire::parse_command(text) {
        Ok(Command::Heartbeat) => {
            let reply = Reply::Heartbeat { cmd: CMD_HEARTBEAT };
            write_frame(out.tail(), OpCode::Text, reply.to_json().as_bytes());
        }
        Ok(Command::Send(outgoing)) => turn.batch.push(PendingChat {
            conn: turn.conn,
            message: outgoing.into_new_message(turn.user),
        }),
        Ok(Command::Sync { after }) => turn.workers.submit(Job::Sync {
            conn: turn.conn,
            user: turn.user,
            after,
        }),
        Err(e) => reply_error(&e, out),
    }
}

/// Queues an error reply; the connection stays open.
pub fn reply_error(e: &WireError, out: &mut Outbound) {
    let reply = Reply::Error {
        cmd: CMD_ERROR,
        client_ref: e.client_ref.as_deref(),
        code: e.code,
        msg: &e.msg,
    };
    write_frame(out.tail(), OpCode::Text, reply.to_json().as_bytes());
}

//! What the server keeps per connection.

use std::time::Instant;

use mio::net::TcpStream;

use super::outbound::Outbound;
use crate::ws;

/// The WebSocket services this server offers, by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/echo`: every message comes back with its type.
    Echo,
    /// `/chat`: the chat service, for an authenticated user.
    Chat {
        /// Who the connection's token belongs to.
        user: i64,
        /// The first bytes of the session token's digest: a logout closes the
        /// connections opened with that session.
        session: u64,
    },
}

/// The life of a connection, one phase after another.
#[derive(Debug)]
pub enum State {
    /// Reading an HTTP request.
    Request,
    /// Reading an upload's body as it arrives.
    Body {
        /// The upload so far; its body grows until `remaining` is 0.
        upload: Box<crate::api::Upload>,
        /// Bytes of body still to come.
        remaining: usize,
        /// Whether to read the next request after the reply.
        keep_alive: bool,
    },
    /// An API request is with a worker; the reply is written when it comes back.
    Waiting {
        /// Whether to read the next request after the reply.
        keep_alive: bool,
    },
    /// A `/chat` upgrade waits for its token check; the 101 is not sent yet.
    Upgrading {
        /// The `Sec-WebSocket-Accept` value to answer with.
        accept: Box<str>,
        /// The user id the client claimed (`?id=`), which must match the token's.
        claimed_user: Option<i64>,
    },
    /// Upgraded: frames flow.
    WebSocket {
        /// The protocol state machine.
        ws: ws::Connection,
        /// The service behind the socket.
        endpoint: Endpoint,
    },
    /// A final response or close frame is queued; once it is written, the
    /// write side is shut down.
    Closing,
    /// Our side is shut down; input is discarded until the peer closes or the
    /// deadline passes.
    Lingering,
}

impl State {
    /// For logs.
    pub fn name(&self) -> &'static str {
        match self {
            State::Request => "reading a request",
            State::Body { .. } => "sending a request body",
            State::Waiting { .. } => "waiting for its API reply",
            State::Upgrading { .. } => "waiting for its token check",
            State::WebSocket { .. } => "open",
            State::Closing => "closing",
            State::Lingering => "waiting for the peer to close",
        }
    }
}

/// One client connection in its slab slot. An idle upgraded connection holds no
/// buffers: both `pending_input` and `out` are empty and unallocated.
#[derive(Debug)]
pub struct Conn {
    /// The socket, registered with the poll under the slot's key.
    pub socket: TcpStream,
    /// Tells this connection from earlier ones in the same slot, for replies
    /// that come back from worker threads.
    pub serial: u64,
    /// Where the connection stands.
    pub state: State,
    /// Input left over from the last read: part of a request head or of a frame header.
    pub pending_input: Vec<u8>,
    /// Bytes waiting for the socket.
    pub out: Outbound,
    /// When the connection is dropped unless its state changes first.
    pub deadline: Option<Instant>,
    /// When input last arrived: quiet connections give their buffers back, and
    /// quiet chat connections are pinged, then dropped.
    pub last_input: Instant,
    /// Whether the poll registration includes WRITABLE.
    pub wants_write: bool,
    /// Whether the slot is on the loop's list of connections to flush this turn.
    pub flush_queued: bool,
    /// Reading is paused because the outbound queue is over its high-water mark:
    /// a client that sends faster than it reads is slowed down, not buffered.
    pub paused: bool,
}

impl Conn {
    /// A freshly accepted connection, expected to send its request before `deadline`.
    pub fn new(socket: TcpStream, serial: u64, now: Instant, deadline: Instant) -> Self {
        Conn {
            socket,
            serial,
            state: State::Request,
            pending_input: Vec::new(),
            out: Outbound::default(),
            deadline: Some(deadline),
            last_input: now,
            wants_write: false,
            flush_queued: false,
            paused: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_slot_is_small() {
        // An idle connection costs its slot and nothing else: keep the slot well
        // under the 512-byte budget (the load tool's idle mode measures the whole).
        assert!(
            std::mem::size_of::<Conn>() <= 256,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}

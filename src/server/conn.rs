//! What the server keeps per connection.

use std::net::IpAddr;

use mio::net::TcpStream;

use super::inspector::Traced;
use super::lifecycle::Lifecycle;
use super::tls::Tls;

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
        session: u32,
    },
    /// `/inspector/feed` (`--inspector`): the frames of a traced `/echo`.
    Inspector,
}

/// One client connection in its slab slot: the socket and what the driver needs
/// around the [`Lifecycle`], which owns everything else. An idle upgraded
/// connection holds no buffers.
#[derive(Debug)]
pub struct Conn {
    /// The socket, registered with the poll under the slot's key.
    pub socket: TcpStream,
    /// Tells this connection from earlier ones in the same slot, for replies
    /// that come back from worker threads.
    pub serial: u64,
    /// States, deadlines, budgets and output.
    pub life: Lifecycle,
    /// The client's address.
    pub peer: IpAddr,
    /// Whether it counts against its address's cap on unauthenticated connections.
    pub counted: bool,
    /// Whether the poll registration includes WRITABLE.
    pub wants_write: bool,
    /// Whether the slot is on the loop's list of connections to flush this turn.
    pub flush_queued: bool,
    /// Its bytes as frames, for `--trace-frames` and the inspector.
    pub tap: Option<Box<Traced>>,
    /// The TLS layer between the socket and the machine, when the server has TLS.
    pub tls: Option<Box<Tls>>,
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(socket: TcpStream, serial: u64, peer: IpAddr, life: Lifecycle) -> Self {
        Conn {
            socket,
            serial,
            life,
            peer,
            counted: true,
            wants_write: false,
            flush_queued: false,
            tap: None,
            tls: None,
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
        // mio's TcpStream carries a selector id in debug builds only: count the
        // release build's bare descriptor.
        let debug_only =
            std::mem::size_of::<TcpStream>() - std::mem::size_of::<std::net::TcpStream>();
        let size = std::mem::size_of::<Conn>() - debug_only;
        assert!(size <= 256, "{size}");
    }
}

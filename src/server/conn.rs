//! What the server keeps per connection.

use std::net::IpAddr;

use mio::net::TcpStream;

use super::inspector::Traced;
use super::lifecycle::Lifecycle;
use super::tls::{Tls, Transport};

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
    /// What only some connections have, boxed together: an idle plain connection
    /// pays one word for both.
    layers: Option<Box<Layers>>,
}

/// A connection's optional layers.
#[derive(Debug, Default)]
struct Layers {
    /// Its bytes as frames, for `--trace-frames` and the inspector.
    tap: Option<Box<Traced>>,
    /// The TLS layer between the socket and the machine, when the server has TLS.
    tls: Option<Box<Tls>>,
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
            layers: None,
        }
    }

    /// Its tap, if its frames are watched.
    pub fn tap(&self) -> Option<&Traced> {
        self.layers.as_ref()?.tap.as_deref()
    }

    /// See [`Conn::tap`].
    pub fn tap_mut(&mut self) -> Option<&mut Traced> {
        self.layers.as_mut()?.tap.as_deref_mut()
    }

    /// Starts or stops watching its frames.
    pub fn set_tap(&mut self, tap: Option<Box<Traced>>) {
        self.take_tap();
        if tap.is_some() {
            self.layers.get_or_insert_with(Box::default).tap = tap;
        }
    }

    /// Stops watching its frames, handing the tap over.
    pub fn take_tap(&mut self) -> Option<Box<Traced>> {
        let layers = self.layers.as_mut()?;
        let tap = layers.tap.take();
        if layers.tls.is_none() {
            self.layers = None;
        }
        tap
    }

    /// Its TLS layer, if the server speaks TLS.
    pub fn tls(&self) -> Option<&Tls> {
        self.layers.as_ref()?.tls.as_deref()
    }

    /// Gives it its TLS layer (at accept).
    pub fn set_tls(&mut self, tls: Option<Box<Tls>>) {
        if tls.is_some() {
            self.layers.get_or_insert_with(Box::default).tls = tls;
        }
    }

    /// The socket as the machine's bytes go through it: plain, or through TLS.
    pub fn transport(&mut self) -> Transport<'_> {
        let tls = self
            .layers
            .as_deref_mut()
            .and_then(|l| l.tls.as_deref_mut());
        Transport::new(&mut self.socket, tls)
    }

    /// The transport, the tap and the machine at once (a flush shows the tap what
    /// the machine's queue sends through the transport).
    pub fn flush_parts(&mut self) -> (Transport<'_>, Option<&mut Traced>, &mut Lifecycle) {
        let (tls, tap) = match self.layers.as_deref_mut() {
            Some(Layers { tap, tls }) => (tls.as_deref_mut(), tap.as_deref_mut()),
            None => (None, None),
        };
        (Transport::new(&mut self.socket, tls), tap, &mut self.life)
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
        // 216 bytes in a release build (a few more here, where padding falls
        // differently): with the allocator's and the slab's share, an idle
        // connection's RSS stays under the 256-byte target (BENCHMARKS.md, (d)).
        assert!(size <= 224, "{size}");
    }
}

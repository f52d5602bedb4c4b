//! Shared by the frame targets: owned copies of events, and the server's read loop.

#![allow(dead_code)]

use fastim::ws::{Connection, Event, Limits, Message, ProtocolError, Role};

/// An [`Event`] copied out of the borrowed buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

pub fn to_owned(event: Event<'_>) -> Owned {
    match event {
        Event::Message(Message::Text(t)) => Owned::Text(t.to_owned()),
        Event::Message(Message::Binary(b)) => Owned::Binary(b.to_vec()),
        Event::Ping(p) => Owned::Ping(p.to_vec()),
        Event::Pong(p) => Owned::Pong(p.to_vec()),
        Event::Close(c) => Owned::Close(c.code.map(|c| c.0), c.reason.to_owned()),
    }
}

/// Feeds a [`Connection`] the way `server::process_frames` does: unconsumed bytes
/// are kept and offered again followed by the next read; `handle_bytes` is called
/// until it returns `(0, None)`; the first error is fatal. The feeder owns its copy
/// of the bytes, since `handle_bytes` unmasks in place.
pub struct Feeder {
    pub conn: Connection,
    pub buf: Vec<u8>,
    pub events: Vec<Owned>,
    pub error: Option<ProtocolError>,
    /// Pongs written with `send_pong` for every Ping event.
    pub pongs: Vec<u8>,
}

impl Feeder {
    pub fn new(role: Role, limits: Limits) -> Self {
        Feeder {
            conn: Connection::new(role, limits),
            buf: Vec::new(),
            events: Vec::new(),
            error: None,
            pongs: Vec::new(),
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.buf.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            let left = self.buf.len() - pos;
            // Pongs (and close replies) are the connection's own.
            match self
                .conn
                .handle_bytes(&mut self.buf[pos..], &mut self.pongs)
            {
                Ok((0, None)) => break,
                Ok((n, event)) => {
                    assert!(n > 0, "an event without consuming bytes would loop forever");
                    assert!(n <= left, "consumed {n} of {left} bytes");
                    pos += n;
                    if let Some(event) = event {
                        self.events.push(to_owned(event));
                    }
                }
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        self.buf.drain(..pos);
    }
}

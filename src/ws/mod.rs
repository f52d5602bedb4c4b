//! RFC 6455, the WebSocket protocol, written by hand and free of I/O.
//!
//! Nothing in here touches a socket, a thread or a clock: every function takes
//! bytes and returns bytes or events, so the whole protocol can be unit-tested,
//! fuzzed and benchmarked on its own.
//!
//! - [`handshake`]: the opening handshake (§4), on top of [`crate::http`].
//! - [`frame`]: frame headers (§5.2), decode from partial input, encode.
//! - [`mask`]: payload masking (§5.3).
//! - [`utf8`]: incremental validation of text (§8.1).
//! - [`close`]: close codes and payloads (§5.5.1, §7.4).
//! - [`deflate`]: permessage-deflate (RFC 7692): negotiation and the lent codecs.
//! - [`spares`]: large message buffers kept between messages.
//! - [`connection`]: frames to messages, control frames, the closing handshake.
//! - [`inspect`]: frames described for people (the frame inspector, `--trace-frames`).

pub mod close;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod inspect;
pub mod mask;
pub mod spares;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{Connection, Event, Limits, Message, Phase, Role, SendError, Sender};
pub use deflate::{Codec, Deflater, Inflater, PerMessageDeflate};
pub use error::ProtocolError;
pub use frame::OpCode;
pub use spares::Spares;

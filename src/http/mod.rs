//! A tiny HTTP/1.1 layer: request heads in, responses out. Sans-IO, like `ws`.

pub mod form;
pub mod multipart;
mod request;
mod response;

pub use request::{FramingError, HeadError, RequestHead, body_framing, parse_head};
pub use response::{Refusal, Status, envelope, write_response, write_response_head};

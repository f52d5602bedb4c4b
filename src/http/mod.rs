//! A tiny HTTP/1.1 layer: request heads in, responses out. Sans-IO, like `ws`.

pub mod form;
pub mod multipart;
mod request;
mod response;

pub use request::{HeadError, RequestHead, parse_head};
pub use response::{Status, write_response, write_response_head};

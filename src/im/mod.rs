//! The chat rules on top of the WebSocket engine: wire format, routing index and the
//! writer's batch commit.

pub mod commit;
pub mod index;
pub mod wire;

//! The chat rules on top of the WebSocket engine: the commands, the wire format,
//! the routing index, presence and the writer's batch commit.

pub mod cmd;
pub mod commit;
pub mod events;
pub mod index;
pub mod presence;
pub mod wire;

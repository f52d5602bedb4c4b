//! `cmd 0`, the heartbeat: answered with a heartbeat.

use super::Produced;
use super::code::HEARTBEAT;
use crate::im::wire::Reply;

/// `{"cmd":0}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat;

impl Heartbeat {
    /// `{"cmd":0}` back.
    pub fn apply(self) -> Produced {
        Produced::Reply(Reply::Heartbeat { cmd: HEARTBEAT }.to_json())
    }
}

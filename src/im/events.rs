//! Events pushed on the `/chat` socket (`cmd 30`): what an API call changed for other
//! people, told to them live so that their clients need no reload.
//!
//! An API call on a worker returns `api::Effect::Notify { users, event }`; the event
//! loop turns it into one [`Fanout`] to every open chat connection of those users
//! ([`notify`]), which leaves at the end of the turn with the presence and typing
//! frames: encoded once, shared by every recipient's queue, under each connection's
//! output bounds (a reader too far behind is dropped, as for any delivery).
//!
//! The frame is `{"cmd":30,"event":"<name>", ...fields}`. Objects (a user) are what the
//! matching API route returns, built by the API layer; this module only frames them.

use serde::Serialize;
use serde_json::Value;

use super::cmd::Fanout;
use super::cmd::code::CONTACT;
use super::index::ChatIndex;

/// Most users one event is addressed to (a group's members at most).
pub const MAX_EVENT_USERS: usize = 100_000;

/// One event on the socket. The variant's name, in snake case, is the frame's `event`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ContactEvent {
    /// To the addressee: `user` (as `/user/find` returns it) asks to be friends.
    FriendRequest {
        /// The requester's public profile.
        user: Value,
        /// When the request was made, unix ms.
        createat: i64,
    },
    /// To the requester's own devices: they asked `user` (the addressee).
    RequestSent {
        /// The addressee's public profile.
        user: Value,
        /// When the request was made, unix ms.
        createat: i64,
    },
    /// To both: `user` (the other one) is now a friend.
    FriendAdded {
        /// The new friend's public profile.
        user: Value,
    },
    /// To both: the friendship with `userid` ended.
    FriendRemoved {
        /// The other one.
        userid: i64,
    },
    /// To both: the request between the two was declined (to the requester, `userid`
    /// is the addressee; to the addressee's devices, the requester).
    RequestDeclined {
        /// The other one.
        userid: i64,
    },
    /// The requester withdrew their request (`/contact/cancelrequest`, or they blocked
    /// the addressee): to the addressee (`userid` the requester) and, on a withdrawal,
    /// to the requester's own devices (`userid` the addressee).
    RequestWithdrawn {
        /// The other one.
        userid: i64,
    },
    /// To the blocker's own devices only: they blocked `user`.
    Blocked {
        /// The blocked user's public profile.
        user: Value,
    },
    /// To the blocker's own devices only: they unblocked `userid`.
    Unblocked {
        /// The unblocked user.
        userid: i64,
    },
    /// To the user's own devices: they created or joined `group` (a Community, as
    /// `/contact/loadcommunity` lists it).
    GroupJoined {
        /// The Community.
        group: Value,
    },
    /// To the user's own devices: they left group `groupid`.
    GroupLeft {
        /// The group.
        groupid: i64,
    },
    /// To every member: `group` (the Community as it is now) was renamed, got a new
    /// icon, memo or owner.
    GroupUpdated {
        /// The Community.
        group: Value,
    },
    /// To the user's friends, fellow group members and own other devices (those that
    /// asked for live events, not users the user blocked): `user` changed their
    /// nickname, avatar, sex or memo (`/user/update`).
    ProfileUpdated {
        /// The public profile as it is now.
        user: Value,
    },
    /// To the removed user: the owner `by` removed them from group `groupid`.
    MemberRemoved {
        /// The group.
        groupid: i64,
        /// The owner who removed them.
        by: i64,
    },
}

#[derive(Serialize)]
struct Frame<'a> {
    cmd: i64,
    #[serde(flatten)]
    event: &'a ContactEvent,
}

impl ContactEvent {
    /// The `cmd 30` frame text.
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and JSON values always serializes.
        serde_json::to_string(&Frame {
            cmd: CONTACT,
            event: self,
        })
        .unwrap_or_default()
    }
}

/// The frame of `event` for every open chat connection of `users` that asked for live
/// events (`{"cmd":24}`, as for presence), each user once, at most [`MAX_EVENT_USERS`];
/// `None` if none is. fastIM's own client never asks: it takes every frame it gets
/// for a chat message.
pub fn notify(index: &ChatIndex, users: &[i64], event: &ContactEvent) -> Option<Fanout> {
    let mut seen = std::collections::HashSet::new();
    let to: Vec<_> = users
        .iter()
        .take(MAX_EVENT_USERS)
        .filter(|u| seen.insert(**u))
        .flat_map(|&u| index.watching_conns(u))
        .collect();
    if to.is_empty() {
        return None;
    }
    Some(Fanout {
        to,
        text: event.to_json(),
    })
}

/// The frame of `event` for the connections that may see `user`'s presence (friends
/// and fellow group members that asked for live events, not users `user` blocked) and
/// `user`'s own watching connections, each once; `None` if there is none.
pub fn notify_contacts(index: &ChatIndex, user: i64, event: &ContactEvent) -> Option<Fanout> {
    let mut to = index.watching_conns(user);
    index.for_each_contact_conn(user, |c| to.push(c));
    to.sort_unstable();
    to.dedup();
    if to.is_empty() {
        return None;
    }
    Some(Fanout {
        to,
        text: event.to_json(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_name_the_event_and_reach_every_watching_connection_once() {
        let added = ContactEvent::FriendAdded {
            user: serde_json::json!({"id": 2, "nickname": "Bob"}),
        };
        assert_eq!(
            added.to_json(),
            r#"{"cmd":30,"event":"friend_added","user":{"id":2,"nickname":"Bob"}}"#
        );
        assert_eq!(
            ContactEvent::FriendRemoved { userid: 7 }.to_json(),
            r#"{"cmd":30,"event":"friend_removed","userid":7}"#
        );
        let mut index = ChatIndex::new([]);
        assert_eq!(notify(&index, &[1, 2], &added), None, "nobody online");
        let now = std::time::Instant::now();
        for (user, conn) in [(1, 10), (1, 11), (2, 20), (3, 30), (2, 21)] {
            index.connect(user, conn);
            // 21 never asks for live events, as fastIM's own client.
            if conn != 21 {
                index.watch(conn, now, std::time::Duration::from_secs(1));
            }
        }
        let f = notify(&index, &[1, 2, 1], &added).expect("frames");
        assert_eq!(f.to, [10, 11, 20]);
        assert!(f.text.starts_with(r#"{"cmd":30,"#));
    }

    #[test]
    fn a_profile_change_goes_to_contacts_and_own_devices_that_watch() {
        let now = std::time::Instant::now();
        let wait = std::time::Duration::from_secs(1);
        // 1 and 2 are friends; 1 and 3 share group 9; 4 is nobody's; 5 is blocked by 1.
        let mut index = ChatIndex::new([(9, 1), (9, 3), (9, 5)])
            .with_friends([(1, 2)])
            .with_blocks([(1, 5)]);
        for (user, conn) in [
            (1, 10),
            (1, 11),
            (2, 20),
            (3, 30),
            (4, 40),
            (5, 50),
            (2, 21),
        ] {
            index.connect(user, conn);
            if conn != 21 {
                index.watch(conn, now, wait);
            }
        }
        let event = ContactEvent::ProfileUpdated {
            user: serde_json::json!({"id": 1}),
        };
        let f = notify_contacts(&index, 1, &event).expect("frames");
        assert_eq!(f.to, [10, 11, 20, 30]);
        assert!(
            f.text.contains(r#""event":"profile_updated""#),
            "{}",
            f.text
        );
    }
}

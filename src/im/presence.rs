//! Presence: who of a user's contacts is online, and when they were last seen.
//!
//! A user is online while any of their chat connections is open: the index notes a
//! user whose first connection opened or whose last one closed ([`Presence::note`]),
//! and [`ChatIndex::presence_turn`] compares each noted user with what their contacts
//! were last told. Only a real change is announced: a second device, or a connection
//! that opened and closed in between, changes nothing for others. The driver runs it
//! at the end of a loop turn at most once per `config::PRESENCE_WINDOW` (at once
//! after a quiet window), so the changes of a window go out together: each
//! watching connection gets at most one frame per window listing the changes it may
//! see, and connections that see the same changes share one encoded frame (in a big
//! group, every member but the changed ones sees the same list). 1,000 members
//! connecting within 3 s: 29,000 frames instead of 500,000 at one per change.
//!
//! Who is told: the online, watching connections of the user's friends and of the
//! members of the user's groups; never the user's own connections, never anyone
//! else. Two users who become friends are each told the other's state at the end
//! of that turn. Last seen is kept here for every user seen since the start (loaded from the
//! users table), and the driver persists each user's as they go offline.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::cmd::PRESENCE_CHUNK;
use super::cmd::code::PRESENCE;
use super::index::{ChatIndex, ConnKey};
use super::wire::Reply;
use crate::im::cmd::Fanout;

/// One user's presence as a client is told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PresenceEntry {
    /// The user.
    pub userid: i64,
    /// Whether any of their connections is open.
    pub online: bool,
    /// When they went offline (or, while online, came online), unix ms; 0 if the
    /// server has not seen them since last-seen was kept.
    pub lastseen: i64,
}

/// The presence state the index keeps.
#[derive(Debug, Default)]
pub struct Presence {
    /// Users announced online: what contacts were last told.
    online: HashSet<i64>,
    /// The time of each user's last change, unix ms.
    last_seen: HashMap<i64, i64>,
    /// Users whose first connection opened or last one closed this turn.
    noted: Vec<i64>,
    /// Users who became friends this turn: each is told the other's state.
    introduced: Vec<(i64, i64)>,
}

/// What one turn's presence changes produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PresenceTurn {
    /// Frames for watching connections.
    pub fanouts: Vec<Fanout>,
    /// Users gone offline, with the time: to persist as last seen.
    pub offline: Vec<(i64, i64)>,
    /// Changes announced (to anyone or no one).
    pub changes: usize,
}

impl Presence {
    /// Starts with these `(user, last seen)` pairs, everybody offline.
    pub fn with_last_seen(pairs: impl IntoIterator<Item = (i64, i64)>) -> Presence {
        Presence {
            last_seen: pairs.into_iter().collect(),
            ..Presence::default()
        }
    }

    /// `user`'s first connection opened or last one closed.
    pub fn note(&mut self, user: i64) {
        self.noted.push(user);
    }

    /// Whether changes wait to be announced.
    pub fn pending(&self) -> bool {
        !self.noted.is_empty() || !self.introduced.is_empty()
    }

    /// `a` and `b` became friends.
    pub fn introduce(&mut self, a: i64, b: i64) {
        self.introduced.push((a, b));
    }

    /// `user` was deleted.
    pub fn forget(&mut self, user: i64) {
        self.online.remove(&user);
        self.last_seen.remove(&user);
    }

    /// `user` as their contacts were last told.
    pub fn entry(&self, user: i64) -> PresenceEntry {
        PresenceEntry {
            userid: user,
            online: self.online.contains(&user),
            lastseen: self.last_seen.get(&user).copied().unwrap_or(0),
        }
    }

    /// Whether `user` was announced online.
    pub fn is_online(&self, user: i64) -> bool {
        self.online.contains(&user)
    }
}

/// The `cmd 24` frames for these states, at most [`PRESENCE_CHUNK`] entries each
/// (one frame, with an empty list, when there are none).
pub fn presence_frames(states: &[PresenceEntry]) -> Vec<String> {
    if states.is_empty() {
        return vec![presence_json(&[])];
    }
    states.chunks(PRESENCE_CHUNK).map(presence_json).collect()
}

fn presence_json(states: &[PresenceEntry]) -> String {
    Reply::Presence {
        cmd: PRESENCE,
        presence: states,
    }
    .to_json()
}

impl ChatIndex {
    /// Announces this turn's presence changes at time `now_ms` (module docs).
    pub fn presence_turn(&mut self, now_ms: i64) -> PresenceTurn {
        let mut noted = std::mem::take(&mut self.presence.noted);
        let introduced = std::mem::take(&mut self.presence.introduced);
        if noted.is_empty() && introduced.is_empty() {
            return PresenceTurn::default();
        }
        noted.sort_unstable();
        noted.dedup();
        let mut turn = PresenceTurn::default();
        let mut changes = Vec::new();
        for user in noted {
            let online = !self.conns_of(user).is_empty();
            let p = &mut self.presence;
            if online == p.online.contains(&user) {
                if !online {
                    // Came and went within the window: nobody is told, but they were seen.
                    p.last_seen.insert(user, now_ms);
                    turn.offline.push((user, now_ms));
                }
                continue;
            }
            if online {
                p.online.insert(user);
            } else {
                p.online.remove(&user);
                turn.offline.push((user, now_ms));
            }
            p.last_seen.insert(user, now_ms);
            changes.push(PresenceEntry {
                userid: user,
                online,
                lastseen: now_ms,
            });
        }
        turn.changes = changes.len();
        // For each watching connection that may see them, the changes it sees (as
        // indexes into `changes`, in order, each once).
        let mut seen_by: HashMap<ConnKey, Vec<u32>> = HashMap::new();
        for (i, change) in (0_u32..).zip(&changes) {
            self.for_each_contact_conn(change.userid, |conn| {
                let list = seen_by.entry(conn).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            });
        }
        // Connections that see the same changes share one frame.
        let mut by_list: HashMap<Vec<u32>, Vec<ConnKey>> = HashMap::new();
        for (conn, list) in seen_by {
            by_list.entry(list).or_default().push(conn);
        }
        for (list, to) in by_list {
            let states: Vec<PresenceEntry> = list.iter().map(|&i| changes[i as usize]).collect();
            for text in presence_frames(&states) {
                turn.fanouts.push(Fanout {
                    to: to.clone(),
                    text,
                });
            }
        }
        // New friends: each one's state to the other (after this turn's changes).
        for (a, b) in introduced {
            for (to, of) in [(a, b), (b, a)] {
                let to = self.watching_conns(to);
                if !to.is_empty() {
                    let text = presence_json(&[self.presence.entry(of)]);
                    turn.fanouts.push(Fanout { to, text });
                }
            }
        }
        turn
    }

    /// The presence of `user`'s contacts: every friend, and the online members of
    /// their groups; by user id.
    pub fn presence_of_contacts(&self, user: i64) -> Vec<PresenceEntry> {
        let mut seen = HashSet::new();
        let mut states = Vec::new();
        for &friend in self.friends(user) {
            if seen.insert(friend) {
                states.push(self.presence.entry(friend));
            }
        }
        for &group in self.groups(user) {
            for &conn in self.group_conns(group) {
                let Some(member) = self.user_of(conn) else {
                    continue;
                };
                if member != user
                    && self.presence.is_online(member)
                    && !self.has_blocked(member, user)
                    && seen.insert(member)
                {
                    states.push(self.presence.entry(member));
                }
            }
        }
        states.sort_unstable_by_key(|s| s.userid);
        states
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn told(turn: &PresenceTurn) -> Vec<(ConnKey, String)> {
        let mut out: Vec<_> = turn
            .fanouts
            .iter()
            .flat_map(|f| f.to.iter().map(|&c| (c, f.text.clone())))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn only_the_first_connect_and_the_last_disconnect_are_announced() {
        // 1 and 2 are friends; 3 shares group 100 with 1; 4 is a stranger.
        let mut index = ChatIndex::new([(100, 1), (100, 3)]).with_friends([(1, 2)]);
        for (user, conn) in [(2, 20), (3, 30), (4, 40)] {
            index.connect(user, conn);
            index.watch(conn, Instant::now(), Duration::ZERO);
        }
        index.presence_turn(1);
        index.connect(1, 10);
        index.connect(1, 11);
        let turn = index.presence_turn(5);
        let on = r#"{"cmd":24,"presence":[{"userid":1,"online":true,"lastseen":5}]}"#;
        assert_eq!(told(&turn), [(20, on.to_owned()), (30, on.to_owned())]);
        assert_eq!(turn.fanouts.len(), 1, "one frame, shared");
        index.disconnect(1, 10);
        assert_eq!(
            index.presence_turn(6),
            PresenceTurn::default(),
            "still online"
        );
        index.disconnect(1, 11);
        index.disconnect(1, 11); // closing, then removed: once
        let turn = index.presence_turn(9);
        assert_eq!(turn.offline, [(1, 9)]);
        assert_eq!(told(&turn).len(), 2);
        assert!(told(&turn)[0].1.contains(r#""online":false,"lastseen":9"#));
        // Connected and gone within one turn: nobody is told, but last seen moves.
        index.connect(1, 12);
        index.disconnect(1, 12);
        let turn = index.presence_turn(10);
        assert_eq!((turn.changes, turn.fanouts.len()), (0, 0));
        assert_eq!(turn.offline, [(1, 10)]);
        assert_eq!(
            index.presence_of_contacts(2),
            [PresenceEntry {
                userid: 1,
                online: false,
                lastseen: 10
            }]
        );
        // 4 and 2 become friends: each hears of the other at once (3 is not told).
        index.befriended(4, 2);
        let turn = index.presence_turn(11);
        assert_eq!(
            told(&turn),
            [
                (
                    20,
                    r#"{"cmd":24,"presence":[{"userid":4,"online":true,"lastseen":1}]}"#.to_owned()
                ),
                (
                    40,
                    r#"{"cmd":24,"presence":[{"userid":2,"online":true,"lastseen":1}]}"#.to_owned()
                ),
            ]
        );
    }

    #[test]
    fn one_frame_per_connection_per_turn_with_the_changes_it_may_see() {
        // Group 100: 1, 2, 3, 4 (4 does not watch); 5 is friends with 1 only.
        let mut index =
            ChatIndex::new([(100, 1), (100, 2), (100, 3), (100, 4)]).with_friends([(1, 5)]);
        index.connect(4, 40);
        index.connect(5, 50);
        index.watch(50, Instant::now(), Duration::ZERO);
        index.presence_turn(0);
        for (user, conn) in [(1, 10), (2, 20), (3, 30)] {
            index.connect(user, conn);
            index.watch(conn, Instant::now(), Duration::ZERO);
        }
        let turn = index.presence_turn(7);
        assert_eq!(turn.changes, 3);
        let told = told(&turn);
        let ids = |text: &str| {
            let v: serde_json::Value = serde_json::from_str(text).expect("json");
            v["presence"]
                .as_array()
                .expect("list")
                .iter()
                .map(|e| e["userid"].as_i64().expect("id"))
                .collect::<Vec<_>>()
        };
        let got: Vec<(ConnKey, Vec<i64>)> = told.iter().map(|(c, t)| (*c, ids(t))).collect();
        assert_eq!(
            got,
            [
                (10, vec![2, 3]),
                (20, vec![1, 3]),
                (30, vec![1, 2]),
                (50, vec![1]),
            ],
            "40 does not watch; nobody hears of themselves"
        );
        assert_eq!(
            index
                .presence_of_contacts(4)
                .iter()
                .map(|s| s.userid)
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }
}

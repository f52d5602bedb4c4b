//! Who is online where: the in-memory index the event loop routes chat messages with.
//!
//! Group fan-out looks up the group's online connections directly instead of scanning
//! every client (fastIM scanned all of them per message, FASTIM.md §1.9 item 12).
//! Memberships are loaded from the store at start and kept current by the API's
//! join/leave effects; connections come and go with the sockets. The index also
//! knows which connections asked for live events (presence and typing, `cmd` 24),
//! keeps presence (`presence.rs`), the typing rate limit of each connection that
//! types (`cmd/typing.rs`) and the read-marker rate limit of each that marks
//! (`cmd/read.rs`): all of it goes when the connection goes (its coalesced read marks
//! are stored all the same).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::cmd::{Admit, ReadWindow, TypingWindow};
use super::presence::Presence;
use crate::store::{Peer, ReadMark, SendRight};

/// A connection, as the server names it (its slab key).
pub type ConnKey = usize;

/// Memberships and online connections.
#[derive(Debug, Default)]
pub struct ChatIndex {
    /// Groups of each user (all members, online or not).
    groups_of: HashMap<i64, HashSet<i64>>,
    /// Connections of each online user.
    conns_of: HashMap<i64, Vec<ConnKey>>,
    /// Online connections of each group's members.
    group_conns: HashMap<i64, Vec<ConnKey>>,
    /// Members of each existing group (a group with no member is deleted).
    group_sizes: HashMap<i64, u32>,
    /// Friends of each user (friendship is mutual: both directions are held).
    friends_of: HashMap<i64, HashSet<i64>>,
    /// Users each user has blocked (`/contact/block`).
    blocks_of: HashMap<i64, HashSet<i64>>,
    /// Users who have blocked each user: the reverse of `blocks_of`.
    blocked_by: HashMap<i64, HashSet<i64>>,
    /// The user of each online connection.
    user_of: HashMap<ConnKey, i64>,
    /// Connections that asked for presence and typing, with when they last asked.
    watching: HashMap<ConnKey, Instant>,
    /// The typing rate limit of connections that have typed.
    typing: HashMap<ConnKey, TypingWindow>,
    /// The read-marker rate limit of connections that have marked (`cmd/read.rs`).
    reads: HashMap<ConnKey, ReadWindow>,
    /// Read marks for the chat writer, taken at the end of the turn.
    reads_to_store: Vec<ReadMark>,
    /// When the next coalesced read mark is due, if one waits.
    reads_due: Option<Instant>,
    /// How many marks waited after the last [`ChatIndex::compact_reads`].
    reads_compacted: usize,
    /// Who was announced online, last seen, this turn's changes.
    pub(super) presence: Presence,
}

impl ChatIndex {
    /// An index of these `(group, user)` memberships, with nobody online.
    pub fn new(memberships: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let mut index = ChatIndex::default();
        for (group, user) in memberships {
            if index.groups_of.entry(user).or_default().insert(group) {
                *index.group_sizes.entry(group).or_default() += 1;
            }
        }
        index
    }

    /// Adds these friendships (each pair in either or both directions).
    pub fn with_friends(mut self, pairs: impl IntoIterator<Item = (i64, i64)>) -> Self {
        for (a, b) in pairs {
            self.friends_of.entry(a).or_default().insert(b);
            self.friends_of.entry(b).or_default().insert(a);
        }
        self
    }

    /// Adds these `(blocker, blocked)` blocks.
    pub fn with_blocks(mut self, pairs: impl IntoIterator<Item = (i64, i64)>) -> Self {
        for (blocker, blocked) in pairs {
            self.set_blocked(blocker, blocked, true);
        }
        self
    }

    /// Starts presence with these `(user, last seen)` pairs from the store.
    pub fn with_last_seen(mut self, pairs: impl IntoIterator<Item = (i64, i64)>) -> Self {
        self.presence = Presence::with_last_seen(pairs);
        self
    }

    /// `a` and `b` became friends: from the end of this turn each one's watching
    /// connections learn the other's presence.
    pub fn befriended(&mut self, a: i64, b: i64) {
        self.friends_of.entry(a).or_default().insert(b);
        self.friends_of.entry(b).or_default().insert(a);
        self.presence.introduce(a, b);
    }

    /// `a` and `b` are no longer friends: one-to-one messages between them stop.
    pub fn unfriended(&mut self, a: i64, b: i64) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(friends) = self.friends_of.get_mut(&x) {
                friends.remove(&y);
                if friends.is_empty() {
                    self.friends_of.remove(&x);
                }
            }
        }
    }

    /// `blocker` blocked (`on`) or unblocked `blocked`: a blocked user is not told
    /// the blocker's presence (not even through a shared group) and may not send
    /// them one-to-one messages, nor they to the blocked user.
    pub fn set_blocked(&mut self, blocker: i64, blocked: i64, on: bool) {
        if on {
            self.blocks_of.entry(blocker).or_default().insert(blocked);
            self.blocked_by.entry(blocked).or_default().insert(blocker);
            self.unfriended(blocker, blocked);
        } else {
            for (map, key, value) in [
                (&mut self.blocks_of, blocker, blocked),
                (&mut self.blocked_by, blocked, blocker),
            ] {
                if let Some(set) = map.get_mut(&key) {
                    set.remove(&value);
                    if set.is_empty() {
                        map.remove(&key);
                    }
                }
            }
        }
    }

    /// Whether `blocker` has blocked `user`.
    pub fn has_blocked(&self, blocker: i64, user: i64) -> bool {
        self.blocks_of
            .get(&blocker)
            .is_some_and(|set| set.contains(&user))
    }

    /// May `user` send to `to`? The same rules as the writer's check inside its
    /// transaction, from memory, so that refused messages never reach the writer.
    pub fn right(&self, user: i64, to: Peer) -> SendRight {
        match to {
            Peer::User(peer)
                if peer == user
                    || self
                        .friends_of
                        .get(&user)
                        .is_some_and(|f| f.contains(&peer)) =>
            {
                SendRight::Allowed
            }
            Peer::User(peer) if self.has_blocked(peer, user) || self.has_blocked(user, peer) => {
                SendRight::UserBlocked
            }
            Peer::User(_) => SendRight::NotFriends,
            Peer::Group(g) if self.groups_of.get(&user).is_some_and(|gs| gs.contains(&g)) => {
                SendRight::Allowed
            }
            Peer::Group(g) if self.group_sizes.contains_key(&g) => SendRight::NotMember,
            Peer::Group(_) => SendRight::NoSuchGroup,
        }
    }

    /// A user's connection came online.
    pub fn connect(&mut self, user: i64, conn: ConnKey) {
        let conns = self.conns_of.entry(user).or_default();
        if conns.is_empty() {
            self.presence.note(user);
        }
        conns.push(conn);
        self.user_of.insert(conn, user);
        for group in self.groups_of.get(&user).into_iter().flatten() {
            self.group_conns.entry(*group).or_default().push(conn);
        }
    }

    /// A user's connection went away.
    /// A connection that has gone already (a closing one is removed twice) changes nothing.
    pub fn disconnect(&mut self, user: i64, conn: ConnKey) {
        if !remove_from(&mut self.conns_of, user, conn) {
            return;
        }
        self.forget_conn(conn);
        if self.conns_of(user).is_empty() {
            self.presence.note(user);
        }
        for group in self.groups_of.get(&user).into_iter().flatten() {
            remove_from(&mut self.group_conns, *group, conn);
        }
    }

    /// `user` joined `group`: their online connections receive it from now on.
    pub fn joined(&mut self, user: i64, group: i64) {
        if !self.groups_of.entry(user).or_default().insert(group) {
            return;
        }
        *self.group_sizes.entry(group).or_default() += 1;
        if let Some(conns) = self.conns_of.get(&user) {
            self.group_conns
                .entry(group)
                .or_default()
                .extend(conns.iter().copied());
        }
    }

    /// `user` left `group`: delivery to them stops.
    pub fn left(&mut self, user: i64, group: i64) {
        if self
            .groups_of
            .get_mut(&user)
            .is_some_and(|groups| groups.remove(&group))
        {
            if let Some(size) = self.group_sizes.get_mut(&group) {
                *size -= 1;
                if *size == 0 {
                    self.group_sizes.remove(&group);
                }
            }
        }
        for conn in self.conns_of.get(&user).into_iter().flatten() {
            remove_from(&mut self.group_conns, group, *conn);
        }
    }

    /// `group` no longer exists.
    pub fn group_deleted(&mut self, group: i64) {
        self.group_conns.remove(&group);
        self.group_sizes.remove(&group);
        for groups in self.groups_of.values_mut() {
            groups.remove(&group);
        }
    }

    /// `user` was deleted: their memberships and friendships go (a group they were the
    /// last member of goes with them), and so does any connection still listed.
    pub fn forget_user(&mut self, user: i64) {
        self.presence.forget(user);
        for conn in self.conns_of.remove(&user).unwrap_or_default() {
            self.forget_conn(conn);
            for group in self.groups_of.get(&user).into_iter().flatten() {
                remove_from(&mut self.group_conns, *group, conn);
            }
        }
        for group in self.groups_of.remove(&user).unwrap_or_default() {
            if let Some(size) = self.group_sizes.get_mut(&group) {
                *size -= 1;
                if *size == 0 {
                    self.group_sizes.remove(&group);
                    self.group_conns.remove(&group);
                }
            }
        }
        for friend in self.friends_of.remove(&user).unwrap_or_default() {
            if let Some(friends) = self.friends_of.get_mut(&friend) {
                friends.remove(&user);
            }
        }
        for blocked in self.blocks_of.remove(&user).unwrap_or_default() {
            if let Some(set) = self.blocked_by.get_mut(&blocked) {
                set.remove(&user);
            }
        }
        for blocker in self.blocked_by.remove(&user).unwrap_or_default() {
            if let Some(set) = self.blocks_of.get_mut(&blocker) {
                set.remove(&user);
            }
        }
    }

    /// Online connections of a user.
    pub fn conns_of(&self, user: i64) -> &[ConnKey] {
        self.conns_of.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Online connections of a group's members.
    pub fn group_conns(&self, group: i64) -> &[ConnKey] {
        self.group_conns.get(&group).map_or(&[], Vec::as_slice)
    }

    /// A user's friends.
    pub fn friends(&self, user: i64) -> impl Iterator<Item = &i64> {
        self.friends_of.get(&user).into_iter().flatten()
    }

    /// A user's groups.
    pub fn groups(&self, user: i64) -> impl Iterator<Item = &i64> {
        self.groups_of.get(&user).into_iter().flatten()
    }

    /// The user of an online connection.
    pub fn user_of(&self, conn: ConnKey) -> Option<i64> {
        self.user_of.get(&conn).copied()
    }

    /// The connection asked for presence and typing at `now`. False (and nothing
    /// changes) if it asked less than `again_after` before, or is not online: the
    /// answer, the contacts' states, is not made again so soon.
    pub fn watch(&mut self, conn: ConnKey, now: Instant, again_after: Duration) -> bool {
        if !self.user_of.contains_key(&conn) {
            return false;
        }
        if let Some(last) = self.watching.get(&conn) {
            if now.saturating_duration_since(*last) < again_after {
                return false;
            }
        }
        self.watching.insert(conn, now);
        true
    }

    /// Whether a typing notice from `conn` to `to` may be forwarded now (the rate
    /// limit, `cmd/typing.rs`); counts it if so.
    pub fn admit_typing(&mut self, conn: ConnKey, to: Peer, now: Instant) -> bool {
        if !self.user_of.contains_key(&conn) {
            return false;
        }
        self.typing.entry(conn).or_default().admit(to, now)
    }

    /// Offers a read mark from `conn` (the rate limit, `cmd/read.rs`): false if it is
    /// refused (too many conversations); otherwise it is stored now or coalesced.
    pub fn admit_read(&mut self, conn: ConnKey, mark: ReadMark, now: Instant) -> bool {
        if !self.user_of.contains_key(&conn) {
            return true;
        }
        let window = self.reads.entry(conn).or_default();
        match window.admit(mark.peer, mark.id, now) {
            Admit::Now(id) => self.reads_to_store.push(ReadMark { id, ..mark }),
            Admit::Later => {
                self.reads_due = earliest(self.reads_due, window.next_due());
            }
            Admit::TooMany => return false,
        }
        true
    }

    /// The read marks to store now: those admitted this turn, and the coalesced ones
    /// whose interval has ended.
    pub fn take_reads(&mut self, now: Instant) -> Vec<ReadMark> {
        if self.reads_due.is_some_and(|due| due <= now) {
            self.reads_due = None;
            for (conn, window) in &mut self.reads {
                if let Some(&user) = self.user_of.get(conn) {
                    for (peer, id) in window.due(now) {
                        self.reads_to_store.push(ReadMark { user, peer, id });
                    }
                }
                self.reads_due = earliest(self.reads_due, window.next_due());
            }
        }
        self.reads_compacted = 0;
        std::mem::take(&mut self.reads_to_store)
    }

    /// While the writer is behind: keeps one waiting mark per user and conversation,
    /// the largest, so that what waits is bounded by the conversations of online users.
    /// It does the work only when their number has doubled since it last did.
    pub fn compact_reads(&mut self) {
        let marks = &mut self.reads_to_store;
        if marks.len() < 2 * self.reads_compacted.max(512) {
            return;
        }
        let mut best: HashMap<(i64, Peer), i64> = HashMap::with_capacity(marks.len());
        for m in marks.drain(..) {
            let id = best.entry((m.user, m.peer)).or_insert(m.id);
            *id = (*id).max(m.id);
        }
        marks.extend(
            best.into_iter()
                .map(|((user, peer), id)| ReadMark { user, peer, id }),
        );
        self.reads_compacted = marks.len();
    }

    /// Who is told of a stored read marker of `user` in `peer`: the user's watching
    /// connections, and the friend's, or every watching member's of the group.
    pub fn read_audience(&self, user: i64, peer: Peer) -> Vec<ConnKey> {
        let mut conns = self.conns_of(user).to_vec();
        match peer {
            Peer::User(p) if p != user => conns.extend_from_slice(self.conns_of(p)),
            Peer::User(_) => {}
            // The group's connections include the reader's own.
            Peer::Group(g) => conns = self.group_conns(g).to_vec(),
        }
        conns.retain(|c| self.watching.contains_key(c));
        conns
    }

    /// The connections a typing notice of `user` in `to` goes to: the watching ones
    /// of the other side, or of the group's members, except `user`'s own.
    pub fn typing_audience(&self, user: i64, to: Peer) -> Vec<ConnKey> {
        let conns = match to {
            Peer::User(peer) => self.conns_of(peer),
            Peer::Group(group) => self.group_conns(group),
        };
        conns
            .iter()
            .copied()
            .filter(|c| self.watching.contains_key(c) && self.user_of(*c) != Some(user))
            .collect()
    }

    /// Whether presence changes wait for [`ChatIndex::presence_turn`].
    pub fn presence_pending(&self) -> bool {
        self.presence.pending()
    }

    /// The watching connections of `user`.
    pub(super) fn watching_conns(&self, user: i64) -> Vec<ConnKey> {
        self.conns_of(user)
            .iter()
            .copied()
            .filter(|c| self.watching.contains_key(c))
            .collect()
    }

    /// Calls `f` with every watching connection of `user`'s friends and fellow group
    /// members (not `user`'s own, nor those of users `user` blocked; a connection may
    /// come more than once).
    pub(super) fn for_each_contact_conn(&self, user: i64, mut f: impl FnMut(ConnKey)) {
        let lists = self
            .friends(user)
            .map(|&friend| self.conns_of(friend))
            .chain(self.groups(user).map(|&group| self.group_conns(group)));
        let blocked = self.blocks_of.get(&user);
        for conns in lists {
            for &conn in conns {
                if !self.watching.contains_key(&conn) {
                    continue;
                }
                let Some(other) = self.user_of(conn) else {
                    continue;
                };
                if other != user && !blocked.is_some_and(|b| b.contains(&other)) {
                    f(conn);
                }
            }
        }
    }

    /// A connection has gone: its live-event state goes with it.
    fn forget_conn(&mut self, conn: ConnKey) {
        let user = self.user_of.remove(&conn);
        self.watching.remove(&conn);
        self.typing.remove(&conn);
        // Coalesced marks of a closing connection are stored all the same.
        if let (Some(user), Some(window)) = (user, self.reads.remove(&conn)) {
            self.reads_to_store
                .extend(window.drain().map(|(peer, id)| ReadMark { user, peer, id }));
        }
    }
}

/// The earlier of two optional times.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Removes `conn` from `key`'s list; whether it was there.
fn remove_from(map: &mut HashMap<i64, Vec<ConnKey>>, key: i64, conn: ConnKey) -> bool {
    let Some(conns) = map.get_mut(&key) else {
        return false;
    };
    let before = conns.len();
    conns.retain(|c| *c != conn);
    let removed = conns.len() < before;
    if conns.is_empty() {
        map.remove(&key);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_read_marks_keep_one_per_user_and_conversation() {
        let mut index = ChatIndex::new([]).with_friends([(1, 2), (1, 3)]);
        index.connect(1, 10);
        let now = Instant::now();
        // Many connections' worth of marks (each conversation once per connection).
        for conn in 0..600 {
            index.connect(1, 1000 + conn);
            for (peer, id) in [(2, conn as i64), (3, 5)] {
                let mark = ReadMark {
                    user: 1,
                    peer: Peer::User(peer),
                    id,
                };
                assert!(index.admit_read(1000 + conn, mark, now));
            }
        }
        index.compact_reads();
        let mut left = index.take_reads(now);
        left.sort_by_key(|m| m.peer.cmd_and_dst());
        assert_eq!(
            left,
            [
                ReadMark {
                    user: 1,
                    peer: Peer::User(2),
                    id: 599
                },
                ReadMark {
                    user: 1,
                    peer: Peer::User(3),
                    id: 5
                }
            ]
        );
    }

    #[test]
    fn fan_out_follows_connections_and_memberships() {
        let mut index = ChatIndex::new([(100, 1), (100, 2), (200, 2)]);
        assert!(index.group_conns(100).is_empty());
        index.connect(1, 10);
        index.connect(2, 20);
        index.connect(2, 21); // a second tab
        assert_eq!(index.group_conns(100), [10, 20, 21]);
        assert_eq!(index.group_conns(200), [20, 21]);
        index.disconnect(2, 20);
        assert_eq!(index.group_conns(100), [10, 21]);
        assert_eq!(index.conns_of(2), [21]);
        index.left(1, 100);
        assert_eq!(index.group_conns(100), [21]);
        index.joined(1, 200);
        index.joined(1, 200); // twice is once
        assert_eq!(index.group_conns(200), [21, 10]);
        index.group_deleted(200);
        assert!(index.group_conns(200).is_empty());
        index.connect(1, 11);
        assert!(
            index.group_conns(200).is_empty(),
            "a deleted group stays gone"
        );
        index.disconnect(1, 10);
        index.disconnect(1, 11);
        index.disconnect(2, 21);
        assert!(index.conns_of.is_empty() && index.group_conns.is_empty());
    }

    #[test]
    fn a_forgotten_user_leaves_no_connection_membership_or_friendship() {
        let mut index =
            ChatIndex::new([(100, 1), (100, 2), (200, 1)]).with_friends([(1, 2), (1, 3)]);
        index.connect(1, 10);
        index.connect(2, 20);
        index.connect(1, 11);
        index.forget_user(1);
        assert!(index.conns_of(1).is_empty());
        assert_eq!(index.group_conns(100), [20]);
        assert!(index.group_conns(200).is_empty());
        assert_eq!(index.right(2, Peer::User(1)), SendRight::NotFriends);
        assert_eq!(index.right(3, Peer::User(1)), SendRight::NotFriends);
        assert_eq!(index.right(1, Peer::Group(100)), SendRight::NotMember);
        assert_eq!(
            index.right(2, Peer::Group(200)),
            SendRight::NoSuchGroup,
            "their last group went with them"
        );
        assert_eq!(index.right(2, Peer::Group(100)), SendRight::Allowed);
        // A connection closed before (the usual order) is simply not there.
        index.connect(2, 21);
        index.disconnect(2, 20);
        index.disconnect(2, 21);
        index.forget_user(2);
        assert!(index.group_conns.is_empty() && index.conns_of.is_empty());
        assert!(index.friends_of.values().all(HashSet::is_empty));
        index.forget_user(99);
    }

    #[test]
    fn send_rights_follow_friendships_and_memberships() {
        let mut index = ChatIndex::new([(100, 1), (100, 2)]).with_friends([(1, 2)]);
        assert_eq!(index.right(1, Peer::User(2)), SendRight::Allowed);
        assert_eq!(index.right(2, Peer::User(1)), SendRight::Allowed);
        assert_eq!(index.right(1, Peer::User(1)), SendRight::Allowed);
        assert_eq!(index.right(1, Peer::User(3)), SendRight::NotFriends);
        assert_eq!(index.right(1, Peer::Group(100)), SendRight::Allowed);
        assert_eq!(index.right(3, Peer::Group(100)), SendRight::NotMember);
        assert_eq!(index.right(3, Peer::Group(999)), SendRight::NoSuchGroup);
        index.befriended(3, 1);
        assert_eq!(index.right(1, Peer::User(3)), SendRight::Allowed);
        index.joined(3, 100);
        assert_eq!(index.right(3, Peer::Group(100)), SendRight::Allowed);
        index.left(1, 100);
        index.left(2, 100);
        index.left(3, 100);
        assert_eq!(index.right(3, Peer::Group(100)), SendRight::NoSuchGroup);
        index.joined(1, 200);
        index.group_deleted(200);
        assert_eq!(index.right(1, Peer::Group(200)), SendRight::NoSuchGroup);
    }
}

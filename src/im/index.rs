//! Who is online where: the in-memory index the event loop routes chat messages with.
//!
//! Group fan-out looks up the group's online connections directly instead of scanning
//! every client (fastIM scanned all of them per message, FASTIM.md §1.9 item 12).
//! Memberships are loaded from the store at start and kept current by the API's
//! join/leave effects; connections come and go with the sockets.

use std::collections::{HashMap, HashSet};

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
}

impl ChatIndex {
    /// An index of these `(group, user)` memberships, with nobody online.
    pub fn new(memberships: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let mut index = ChatIndex::default();
        for (group, user) in memberships {
            index.groups_of.entry(user).or_default().insert(group);
        }
        index
    }

    /// A user's connection came online.
    pub fn connect(&mut self, user: i64, conn: ConnKey) {
        self.conns_of.entry(user).or_default().push(conn);
        for group in self.groups_of.get(&user).into_iter().flatten() {
            self.group_conns.entry(*group).or_default().push(conn);
        }
    }

    /// A user's connection went away.
    pub fn disconnect(&mut self, user: i64, conn: ConnKey) {
        remove_from(&mut self.conns_of, user, conn);
        for group in self.groups_of.get(&user).into_iter().flatten() {
            remove_from(&mut self.group_conns, *group, conn);
        }
    }

    /// `user` joined `group`: their online connections receive it from now on.
    pub fn joined(&mut self, user: i64, group: i64) {
        if !self.groups_of.entry(user).or_default().insert(group) {
            return;
        }
        if let Some(conns) = self.conns_of.get(&user) {
            self.group_conns
                .entry(group)
                .or_default()
                .extend(conns.iter().copied());
        }
    }

    /// `user` left `group`: delivery to them stops.
    pub fn left(&mut self, user: i64, group: i64) {
        if let Some(groups) = self.groups_of.get_mut(&user) {
            groups.remove(&group);
        }
        for conn in self.conns_of.get(&user).into_iter().flatten() {
            remove_from(&mut self.group_conns, group, *conn);
        }
    }

    /// `group` no longer exists.
    pub fn group_deleted(&mut self, group: i64) {
        self.group_conns.remove(&group);
        for groups in self.groups_of.values_mut() {
            groups.remove(&group);
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
}

fn remove_from(map: &mut HashMap<i64, Vec<ConnKey>>, key: i64, conn: ConnKey) {
    if let Some(conns) = map.get_mut(&key) {
        conns.retain(|c| *c != conn);
        if conns.is_empty() {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

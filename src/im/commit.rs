//! The chat writer's work: check each message's right to be sent and store the
//! allowed ones, the whole batch in one transaction (group commit). Runs on the
//! writer thread.

use log::error;

use crate::store::{Db, Message, Saved, SendRight};

/// What became of one message of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (or found stored under the same client reference).
    Saved(Saved),
    /// Not allowed or not possible; the reason is for the sender.
    Refused {
        /// 403 not allowed, 404 no such recipient, 500 storage failure.
        code: u16,
        /// For a person.
        msg: String,
    },
}

/// Checks and stores `batch` in one transaction; outcomes come back in batch order.
pub fn commit_batch(db: &mut Db, batch: &[Message], now_ms: i64) -> Vec<Outcome> {
    match db.save_messages_checked(batch, now_ms) {
        Ok(results) => results
            .into_iter()
            .map(|r| match r {
                Ok(saved) => Outcome::Saved(saved),
                Err(right) => refusal(right),
            })
            .collect(),
        Err(e) => {
            error!("storing {} chat messages failed: {e}", batch.len());
            vec![internal(); batch.len()]
        }
    }
}

/// What the sender is told when it may not send.
pub fn refusal(right: SendRight) -> Outcome {
    let (code, msg) = match right {
        SendRight::NotFriends => (403, "you can only message your friends"),
        SendRight::NotMember => (403, "you are not a member of this group"),
        SendRight::NoSuchGroup => (404, "no such group"),
        SendRight::Blocked => (403, crate::api::MSG_BLOCKED),
        SendRight::UserBlocked => (
            403,
            "you cannot message this user: one of you blocked the other",
        ),
        // Not produced for a refused message; kept total for the match.
        SendRight::Allowed => return internal(),
    };
    Outcome::Refused {
        code,
        msg: msg.to_owned(),
    }
}

fn internal() -> Outcome {
    Outcome::Refused {
        code: 500,
        msg: "the message could not be stored; send it again".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{test_db, text, user};
    use crate::store::{NewGroup, Peer};

    fn sent(sender: i64, to: Peer, client_ref: &str) -> Message {
        Message {
            client_ref: Some(client_ref.to_owned()),
            ..text(sender, to, &format!("from {sender}"))
        }
    }

    #[test]
    fn rights_are_checked_per_message_and_the_rest_is_stored() {
        let mut t = test_db();
        let db = &mut t.db;
        let a = user(db, "100001", 1).id;
        let b = user(db, "100002", 1).id;
        let stranger = user(db, "100003", 1).id;
        db.add_friend(a, b, 2).expect("friends");
        let group = NewGroup {
            name: "g".into(),
            icon: String::new(),
            cate: 0,
            memo: String::new(),
        };
        let g = db.create_group(a, group, 5, 3).expect("group").id;

        let batch = [
            sent(a, Peer::User(b), "1"),
            sent(stranger, Peer::User(a), "2"),
            sent(a, Peer::Group(g), "3"),
            sent(b, Peer::Group(g), "4"),
            sent(a, Peer::Group(9999), "5"),
            sent(a, Peer::User(b), "1"),
        ];
        let outcomes = commit_batch(db, &batch, 10);
        let Outcome::Saved(first) = &outcomes[0] else {
            panic!("{outcomes:?}")
        };
        assert!(matches!(&outcomes[1], Outcome::Refused { code: 403, .. }));
        let Outcome::Saved(third) = &outcomes[2] else {
            panic!("{outcomes:?}")
        };
        assert!(third.id > first.id);
        assert!(
            matches!(&outcomes[3], Outcome::Refused { code: 403, msg } if msg.contains("member"))
        );
        assert!(matches!(&outcomes[4], Outcome::Refused { code: 404, .. }));
        assert_eq!(
            outcomes[5],
            Outcome::Saved(Saved {
                duplicate: true,
                ..*first
            })
        );
        assert_eq!(db.messages_for(b, 0, 100).expect("read").len(), 1);
    }
}

//! The chat writer's work: check each message's right to be sent and store the
//! allowed ones, the whole batch in one transaction (group commit). Runs on the
//! writer thread.

use log::error;

use crate::store::{Change, ChangeRefused, Changed, Db, Edit, Message, Saved, SendRight, Windows};

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
        SendRight::BadReply => (
            404,
            "reply names no message of this conversation that you can see",
        ),
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

/// Applies a batch of recalls and edits in one transaction: each is the message as
/// changed with its place in the change log, or the refusal for the requester.
pub fn commit_changes(
    db: &mut Db,
    batch: &[Change],
    now_ms: i64,
    windows: Windows,
) -> Vec<Result<Changed, Outcome>> {
    match db.change_messages(batch, now_ms, windows) {
        Ok(results) => results
            .into_iter()
            .zip(batch)
            .map(|(r, c)| r.map_err(|why| change_refusal(why, c, windows)))
            .collect(),
        Err(e) => {
            error!("changing {} chat messages failed: {e}", batch.len());
            vec![Err(internal()); batch.len()]
        }
    }
}

/// What the requester of a change is told when it may not have it.
fn change_refusal(why: ChangeRefused, change: &Change, windows: Windows) -> Outcome {
    let (verb, done, window) = match change.edit {
        Edit::Recall => ("recall", "recalled", windows.recall_ms),
        Edit::Content(_) => ("edit", "edited", windows.edit_ms),
    };
    let (code, msg) = match why {
        ChangeRefused::NoSuchMessage => (404, format!("no message has id {}", change.id)),
        ChangeRefused::NotYours => (403, format!("only its sender may {verb} it")),
        ChangeRefused::TooLate => (
            403,
            format!(
                "a message can only be {done} within {} seconds of sending it",
                window / 1000
            ),
        ),
        ChangeRefused::Recalled => (409, "the message has been recalled".to_owned()),
        ChangeRefused::NotText => (
            400,
            "only a text message (media 1) can be edited".to_owned(),
        ),
        ChangeRefused::Blocked => (403, crate::api::MSG_BLOCKED.to_owned()),
    };
    Outcome::Refused { code, msg }
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

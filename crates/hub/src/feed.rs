//! What a room's history gives a joiner, whichever store holds it (SQLite on one node, Redis
//! across several), and the rule that decides whether a resume has a gap.
//!
//! A client resumes with the last `seq` it saw (and the epoch it saw it in). The store answers
//! with what it holds; the replay then starts right after `since`, unless the numbers the
//! client holds belong to a history that is gone (another epoch, or a `since` past the end),
//! in which case it starts at the oldest message held. Either way the client is told when
//! messages it asked for are missing, instead of silently getting fewer.

use crate::protocol::{ChatMessage, PresenceEvent};

/// A room's history as read for one join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The history's epoch (see [`new_epoch`]).
    pub(crate) epoch: String,
    /// The room's last sequence number (0: nothing said yet).
    pub(crate) last_seq: u64,
    /// The oldest sequence number still held; `last_seq + 1` when none is.
    pub(crate) first_seq: u64,
    /// What to replay, oldest first.
    pub(crate) messages: Vec<ChatMessage>,
}

/// Where a join's replay starts, as asked by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// No replay (plain-text clients, which cannot resume).
    None,
    /// The last few messages (a join without `since`).
    Recent(u64),
    /// Everything after this sequence number.
    After(u64),
}

/// The sequence number after which a replay for `since` starts: `since` itself, or 0 when the
/// client's numbers are from another history (a different `client_epoch`, or a `since` past
/// the room's `last_seq`, which only a history that started over can have). The Redis join
/// script (`cluster/scripts.rs`) applies the same rule inside Redis.
pub(crate) fn resume_after(since: u64, client_epoch: Option<&str>, epoch: &str, last: u64) -> u64 {
    if client_epoch.is_some_and(|e| e != epoch) || since > last {
        0
    } else {
        since
    }
}

impl Snapshot {
    /// Whether a client that saw everything up to `since` (in `client_epoch`) misses
    /// messages: its history is gone, or what follows `since` has been trimmed.
    pub(crate) fn gap(&self, since: u64, client_epoch: Option<&str>) -> bool {
        let after = resume_after(since, client_epoch, &self.epoch, self.last_seq);
        after != since || after + 1 < self.first_seq
    }
}

/// Something that happened in a room, as every node's members learn it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomEvent {
    /// A stored message.
    Message {
        msg: ChatMessage,
        /// The sender, when it is a connection of this node.
        sender: Option<u64>,
        /// Whether the sender speaks plain text (its text goes to plain members as typed).
        plain_sender: bool,
    },
    /// Someone joined or left.
    Presence {
        event: PresenceEvent,
        name: String,
        /// Members of the room after the event, on every node.
        count: usize,
        /// Who, when it is a connection of this node (it is not told of its own join).
        subject: Option<u64>,
        /// The room's presence counter after the event, which orders it against the member
        /// list a joiner gets (0 on a single node, where nothing needs ordering).
        pseq: u64,
    },
}

/// A new epoch: 64 random bits in hex, so that two histories never share one.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(first: u64, last: u64) -> Snapshot {
        Snapshot {
            epoch: "e1".into(),
            last_seq: last,
            first_seq: first,
            messages: Vec::new(),
        }
    }

    #[test]
    fn a_resume_inside_what_is_held_has_no_gap() {
        let s = held(5, 9);
        assert!(!s.gap(4, None), "the next message is the oldest held");
        assert!(!s.gap(9, Some("e1")), "up to date");
        assert!(!held(1, 0).gap(0, None), "an empty room");
    }

    #[test]
    fn a_resume_before_what_is_held_or_from_another_history_has_a_gap() {
        let s = held(5, 9);
        assert!(s.gap(3, None), "message 4 was trimmed");
        assert!(s.gap(0, None), "messages 1 to 4 were trimmed");
        assert!(s.gap(7, Some("e0")), "another epoch");
        assert!(s.gap(12, None), "past the end: the history started over");
        assert!(held(1, 0).gap(3, None), "everything was lost");
    }

    #[test]
    fn a_replay_starts_over_only_for_numbers_of_another_history() {
        assert_eq!(resume_after(5, None, "e1", 9), 5);
        assert_eq!(resume_after(5, Some("e1"), "e1", 9), 5);
        assert_eq!(resume_after(5, Some("e0"), "e1", 9), 0);
        assert_eq!(resume_after(12, None, "e1", 9), 0);
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
        assert_eq!(new_epoch().len(), 16);
    }
}

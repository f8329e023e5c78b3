//! Where a room lives in Redis. Every key of a room carries the room name as its hash tag
//! (`duplex:{general}:log`), so that on a Redis Cluster all of a room's keys are in one slot
//! and its scripts, which touch several of them at once, may run there.

/// The key names of one hub deployment (all nodes sharing a Redis use the same prefix).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

/// The keys of one room, in the order the scripts take them (`KEYS[1]` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomKeys {
    /// The last sequence number (`INCR`).
    pub(crate) seq: String,
    /// The history: a stream whose entry ids are `<seq>-0`, trimmed to the retention.
    pub(crate) log: String,
    /// The history's epoch, made with the room's first message or join.
    pub(crate) epoch: String,
    /// Members present: a sorted set of member ids scored by when they expire (ms).
    pub(crate) members: String,
    /// Member id -> `"<joined ms> <length of ident> <ident><name>"`.
    pub(crate) names: String,
    /// Presence events so far, which orders them against a joiner's member list.
    pub(crate) pseq: String,
    /// The pub/sub channel of live events.
    pub(crate) channel: String,
    /// Identity -> how many of its connections are present.
    pub(crate) idents: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn room(&self, room: &str) -> RoomKeys {
        let base = format!("{}:{{{room}}}", self.prefix);
        RoomKeys {
            seq: format!("{base}:seq"),
            log: format!("{base}:log"),
            epoch: format!("{base}:epoch"),
            members: format!("{base}:members"),
            names: format!("{base}:names"),
            pseq: format!("{base}:pseq"),
            channel: format!("{base}:live"),
            idents: format!("{base}:idents"),
        }
    }

    /// The set of rooms that have ever had a message.
    pub(crate) fn index(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    /// The rooms that have ever had a message, as a sorted set whose scores are all 0, so
    /// that it is ordered by name and a page of it is read with `ZRANGEBYLEX ... LIMIT`
    /// (the set of [`Keys::index`] has no order: a page of it would sort all of it).
    pub(crate) fn by_name(&self) -> String {
        format!("{}:rooms-by-name", self.prefix)
    }

    /// The rooms with members: a sorted set of room names scored by minus their member
    /// count, so that ascending order is most members first and, among rooms of one count,
    /// by name. A hint kept by the nodes after joins, leaves and sweeps; the room list
    /// checks the counts it shows against the rooms' presence.
    pub(crate) fn active(&self) -> String {
        format!("{}:rooms-active", self.prefix)
    }

    /// The room whose live channel is `channel`, if it is one of ours.
    pub(crate) fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:live")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_keys_share_its_hash_tag_and_its_channel_names_it() {
        let keys = Keys::new("duplex");
        let room = keys.room("team.a");
        assert_eq!(room.log, "duplex:{team.a}:log");
        for key in [
            &room.seq,
            &room.epoch,
            &room.members,
            &room.names,
            &room.pseq,
        ] {
            assert!(key.starts_with("duplex:{team.a}:"), "{key}");
        }
        assert_eq!(keys.room_of_channel(&room.channel), Some("team.a"));
        assert_eq!(keys.room_of_channel("other:{team.a}:live"), None);
        assert_eq!(keys.room_of_channel("duplex:{team.a}:log"), None);
    }
}

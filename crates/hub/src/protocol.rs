//! The JSON chat protocol spoken under the subprotocol [`SUBPROTOCOL`]: what clients send,
//! what the hub answers, and the rules for room and user names.
//!
//! Every message is one JSON object in one text frame, with a `"type"` field.
//!
//! With signed tokens (JWT) on the hub, a connection's first message is
//! [`ServerMessage::Identity`]: the name it speaks under, which a client then shows instead of
//! asking for one, and sends no other (a `join` may leave out its `name`).

use serde::{Deserialize, Serialize};

/// The subprotocol name a client offers (`Sec-WebSocket-Protocol: duplex.v1`) to speak JSON.
pub const SUBPROTOCOL: &str = "duplex.v1";

/// The longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 64;

/// The longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Rooms in one page of the room list (`{"type":"rooms"}`, `GET /api/rooms`), at most. A hub
/// may hold any number of rooms that once had a message; a reply listing all of them would
/// grow without bound, so the list comes in pages and a `next` cursor asks for the following
/// one.
pub const ROOMS_PER_PAGE: usize = 100;

/// A message a client sends.
///
/// ```
/// use duplex_hub::protocol::ClientMessage;
/// let join: ClientMessage =
///     serde_json::from_str(r#"{"type":"join","room":"general","name":"alice","since":41}"#).unwrap();
/// assert_eq!(
///     join,
///     ClientMessage::Join {
///         room: Some("general".into()),
///         name: Some("alice".into()),
///         since: Some(41),
///         epoch: None,
///     }
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    /// Enter a room (the connection's URL room if `room` is absent) under `name` (required the
    /// first time). With `since`, the hub replays every stored message after that sequence
    /// number; without it, the last few.
    Join {
        /// The room.
        room: Option<String>,
        /// The user's name, shown to others.
        name: Option<String>,
        /// The last sequence number the client saw in this room.
        since: Option<u64>,
        /// The room's epoch as the client last saw it (from a `history` frame): if the room's
        /// history has been lost and restarted since, the numbers are not comparable, and
        /// the reply says `"gap": true`.
        epoch: Option<String>,
    },
    /// Leave a room.
    Leave {
        /// The room (the URL room if absent).
        room: Option<String>,
    },
    /// Say something in a room the client has joined.
    Send {
        /// The room (may be omitted while the client is in exactly one room).
        room: Option<String>,
        /// The text.
        text: String,
    },
    /// Ask for one page of the room list (at most [`ROOMS_PER_PAGE`] rooms): rooms with
    /// members first, most members first and then by name, then the other rooms by name.
    Rooms {
        /// Where to go on: the `next` of the previous page (absent: the first page).
        cursor: Option<String>,
    },
}

/// A chat message as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The room.
    pub room: String,
    /// Position in the room's history: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// The sender's name.
    pub from: String,
    /// When the hub received it, in milliseconds since the Unix epoch.
    pub time: u64,
    /// The text.
    pub text: String,
}

/// Whether a presence event is an arrival or a departure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceEvent {
    /// Someone joined.
    Joined,
    /// Someone left (or was disconnected).
    Left,
}

/// One entry of a room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room name.
    pub name: String,
    /// Connections in the room now.
    pub members: usize,
    /// The room's last sequence number.
    pub last_seq: u64,
}

/// A message the hub sends.
///
/// ```
/// use duplex_hub::protocol::ServerMessage;
/// let err = ServerMessage::Error { code: "not_joined".into(), message: "join the room first".into() };
/// assert_eq!(
///     err.to_json(),
///     r#"{"type":"error","code":"not_joined","message":"join the room first"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// A message said in a room (to every JSON member, the sender included, so it learns the
    /// sequence number).
    Message(ChatMessage),
    /// Someone joined or left. The joiner's own `joined` carries the whole member list; the
    /// others get the name and the count only, and keep their list by adding and removing
    /// names: a join to a room of N then costs N small frames, not N copies of an N-name list
    /// (which would make N joins cost N cubed bytes, and a join-and-leave loop a cheap flood).
    Presence {
        /// The room.
        room: String,
        /// Joined or left.
        event: PresenceEvent,
        /// Who.
        name: String,
        /// How many members the room has now (plain-text ones included).
        count: usize,
        /// Everyone in the room now, in order of arrival: only in the joiner's own `joined`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        members: Option<Vec<String>>,
    },
    /// Stored messages replayed on join, oldest first. A long replay comes as several frames;
    /// the first says whether it has a gap.
    History {
        /// The room.
        room: String,
        /// The messages.
        messages: Vec<ChatMessage>,
        /// Names this run of the room's history: it changes when the history is lost (a Redis
        /// without persistence restarted, a data directory deleted) and numbering starts over.
        /// A client keeps it with its last `seq` and sends both when it joins again.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        epoch: String,
        /// True when messages the client asked for are no longer held (trimmed to the history
        /// limit, or lost with the epoch): the replay starts at `first_seq`, not after `since`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        gap: bool,
        /// With `gap`: the oldest message still held (one past the last when none is).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_seq: Option<u64>,
    },
    /// The answer to `{"type":"rooms"}`: one page of the room list.
    Rooms {
        /// At most [`ROOMS_PER_PAGE`] rooms with members or history: those with members
        /// first (most members first, then by name), then the others by name.
        rooms: Vec<RoomInfo>,
        /// The cursor for the next page, absent on the last one. Pages are read one at a
        /// time, not as one snapshot: a room whose member count changes between two pages
        /// may show up in both or in neither.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Who the connection is, from its token (JWT): sent once, as the first message, to a
    /// connection that opened with a signed token, and never otherwise. The connection joins
    /// under `name` (a join may leave out its `name`; one with another name is refused with
    /// the error `identity`), only rooms that `rooms` allows (others: `forbidden_room`), and
    /// may send only if `publish` (else: `read_only`).
    Identity {
        /// The token's subject.
        sub: String,
        /// The name the connection speaks under (the token's `name`, or `sub`).
        name: String,
        /// The rooms it may join (names, or `prefix.*`); absent: every room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rooms: Option<Vec<String>>,
        /// Whether it may send messages.
        publish: bool,
    },
    /// A request could not be carried out; the connection stays open.
    Error {
        /// Machine-readable: `bad_request`, `bad_name`, `bad_room`, `not_joined`,
        /// `too_many_rooms`, `bad_cursor` (a `rooms` cursor that no reply gave), `storage`
        /// (the history could not be written or read), `unavailable`
        /// (the shared store of a multi-node hub is unreachable: try again), `busy` (too many
        /// requests waiting for it), and with a token `identity`, `forbidden_room`, `read_only`.
        code: String,
        /// Human-readable.
        message: String,
    },
}

impl ServerMessage {
    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail (no maps with non-string keys, no
        // failing Serialize impls); an empty object would be the only possible fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// An error message.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// Whether `name` can be a room: 1 to [`MAX_ROOM_LEN`] ASCII letters, digits, `-`, `_`, `.`.
/// Kept to URL-safe characters so that `/rooms/<name>` needs no escaping.
///
/// ```
/// use duplex_hub::protocol::valid_room;
/// assert!(valid_room("general") && valid_room("rust-2024_v1.0"));
/// assert!(!valid_room("") && !valid_room("a/b") && !valid_room("héllo"));
/// ```
pub fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The user name as it will be shown, if acceptable: trimmed, 1 to [`MAX_NAME_CHARS`]
/// characters, no control characters.
///
/// ```
/// use duplex_hub::protocol::clean_name;
/// assert_eq!(clean_name("  Zoë "), Some("Zoë".to_string()));
/// assert_eq!(clean_name(" "), None);
/// assert_eq!(clean_name("a\nb"), None);
/// ```
pub fn clean_name(name: &str) -> Option<String> {
    let name = name.trim();
    let chars = name.chars().count();
    let ok = (1..=MAX_NAME_CHARS).contains(&chars) && !name.chars().any(char::is_control);
    ok.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_message_parses() {
        let cases = [
            (
                r#"{"type":"join","name":"bob"}"#,
                ClientMessage::Join {
                    room: None,
                    name: Some("bob".into()),
                    since: None,
                    epoch: None,
                },
            ),
            (
                r#"{"type":"leave","room":"x"}"#,
                ClientMessage::Leave {
                    room: Some("x".into()),
                },
            ),
            (
                r#"{"type":"send","text":"hi"}"#,
                ClientMessage::Send {
                    room: None,
                    text: "hi".into(),
                },
            ),
            (r#"{"type":"rooms"}"#, ClientMessage::Rooms { cursor: None }),
            (
                r#"{"type":"rooms","cursor":"n.general"}"#,
                ClientMessage::Rooms {
                    cursor: Some("n.general".into()),
                },
            ),
        ];
        for (json, want) in cases {
            assert_eq!(
                serde_json::from_str::<ClientMessage>(json).unwrap(),
                want,
                "{json}"
            );
        }
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"shout"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"send"}"#).is_err());
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let m = ServerMessage::Message(ChatMessage {
            room: "general".into(),
            seq: 7,
            from: "alice".into(),
            time: 1_700_000_000_000,
            text: "hi".into(),
        });
        assert_eq!(
            m.to_json(),
            r#"{"type":"message","room":"general","seq":7,"from":"alice","time":1700000000000,"text":"hi"}"#
        );
        let p = ServerMessage::Presence {
            room: "general".into(),
            event: PresenceEvent::Joined,
            name: "bob".into(),
            count: 2,
            members: Some(vec!["alice".into(), "bob".into()]),
        };
        assert_eq!(
            p.to_json(),
            r#"{"type":"presence","room":"general","event":"joined","name":"bob","count":2,"members":["alice","bob"]}"#
        );
        let p = ServerMessage::Presence {
            room: "general".into(),
            event: PresenceEvent::Left,
            name: "bob".into(),
            count: 1,
            members: None,
        };
        assert_eq!(
            p.to_json(),
            r#"{"type":"presence","room":"general","event":"left","name":"bob","count":1}"#
        );
        let room = RoomInfo {
            name: "general".into(),
            members: 2,
            last_seq: 43,
        };
        let last = ServerMessage::Rooms {
            rooms: vec![room.clone()],
            next: None,
        };
        assert_eq!(
            last.to_json(),
            r#"{"type":"rooms","rooms":[{"name":"general","members":2,"last_seq":43}]}"#,
            "the last page has no next"
        );
        let more = ServerMessage::Rooms {
            rooms: vec![room],
            next: Some("a.1".into()),
        };
        assert!(more.to_json().ends_with(r#"],"next":"a.1"}"#));
    }
}

//! The room list in pages, the same on both backends (SQLite on one node, Redis shared).
//!
//! A page holds at most [`ROOMS_PER_PAGE`] rooms in two runs: rooms with members, most
//! members first and then by name (what someone looking for company wants to see first),
//! then every other room with history, by name. Neither backend ever reads every room for a
//! page: the first run is read by position in a list ordered by member count (kept in
//! memory on one node, a sorted set in Redis), the second from an index ordered by name,
//! starting after the last name shown.
//!
//! The cursor says where the next page starts, as text that needs no escaping in a URL
//! (`?cursor=`): `a.<position>` in the first run, `n.<name>` in the second. It is a position,
//! not a snapshot: a room whose member count changes between two pages may be listed twice or
//! not at all, which a list of rooms to pick from tolerates, and a snapshot would cost memory
//! per reader on the hub.

use crate::protocol::{valid_room, RoomInfo, ROOMS_PER_PAGE};

/// Where a page of the room list starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// At the position'th room with members (0: the first page).
    Active(usize),
    /// At the first room without members whose name sorts after this one (`""`: the first).
    Idle(String),
}

/// A cursor that no reply gave (the `bad_cursor` error, or 400 from the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor from a rooms reply: {0:?}")]
pub(crate) struct BadCursor(pub(crate) String);

impl Cursor {
    /// The cursor of a request: none is the first page.
    pub(crate) fn parse(text: Option<&str>) -> Result<Cursor, BadCursor> {
        let Some(text) = text else {
            return Ok(Cursor::Active(0));
        };
        let bad = || BadCursor(text.chars().take(80).collect());
        if let Some(position) = text.strip_prefix("a.") {
            // Digits only: `usize::from_str` would also take a leading `+`.
            if position.is_empty() || !position.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            return position.parse().map(Cursor::Active).map_err(|_| bad());
        }
        match text.strip_prefix("n.") {
            Some(name) if valid_room(name) => Ok(Cursor::Idle(name.to_owned())),
            _ => Err(bad()),
        }
    }

    /// The cursor as a reply's `next` carries it.
    pub(crate) fn encode(&self) -> String {
        match self {
            Cursor::Active(position) => format!("a.{position}"),
            Cursor::Idle(name) => format!("n.{name}"),
        }
    }
}

/// One page of the room list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) rooms: Vec<RoomInfo>,
    /// The cursor of the next page; `None` on the last.
    pub(crate) next: Option<Cursor>,
}

/// Collects a page as a backend reads rooms in list order. It takes one room more than a
/// page holds: whether that one exists is what tells the last page from the others, without
/// a count of all rooms.
#[derive(Debug, Default)]
pub(crate) struct PageBuilder {
    /// Each room with the cursor that starts right after it.
    entries: Vec<(RoomInfo, Cursor)>,
    /// Right after the last room looked at, listed or skipped.
    resume: Option<Cursor>,
}

impl PageBuilder {
    /// Rooms the backend still needs, at most (a page and the one that tells whether there
    /// is more).
    pub(crate) fn wanted(&self) -> usize {
        (ROOMS_PER_PAGE + 1).saturating_sub(self.entries.len())
    }

    /// Whether the page is complete.
    pub(crate) fn full(&self) -> bool {
        self.wanted() == 0
    }

    /// Lists `room`; `after` is the cursor that starts right after it.
    pub(crate) fn push(&mut self, room: RoomInfo, after: Cursor) {
        self.resume = Some(after.clone());
        self.entries.push((room, after));
    }

    /// Looks at a room without listing it (it belongs to the other run, or is gone).
    pub(crate) fn skip(&mut self, after: Cursor) {
        self.resume = Some(after);
    }

    /// The page. `exhausted`: the backend read to the end of the list; otherwise it stopped
    /// early to bound its work, and the next page goes on from the last room it looked at.
    pub(crate) fn finish(mut self, exhausted: bool) -> Page {
        if self.entries.len() > ROOMS_PER_PAGE {
            self.entries.truncate(ROOMS_PER_PAGE);
            let next = self.entries.last().map(|(_, after)| after.clone());
            return Page {
                rooms: self.entries.into_iter().map(|(room, _)| room).collect(),
                next,
            };
        }
        Page {
            rooms: self.entries.into_iter().map(|(room, _)| room).collect(),
            next: if exhausted { None } else { self.resume },
        }
    }
}

/// Orders rooms with members as the first run lists them: most members first, then by name.
pub(crate) fn by_activity(rooms: &mut [RoomInfo]) {
    rooms.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.name.cmp(&b.name)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, members: usize) -> RoomInfo {
        RoomInfo {
            name: name.into(),
            members,
            last_seq: 0,
        }
    }

    #[test]
    fn cursors_read_back_what_replies_wrote_and_nothing_else() {
        for cursor in [
            Cursor::Active(0),
            Cursor::Active(250),
            Cursor::Idle("team.a-1_b".into()),
        ] {
            assert_eq!(Cursor::parse(Some(&cursor.encode())), Ok(cursor));
        }
        assert_eq!(Cursor::parse(None), Ok(Cursor::Active(0)));
        for bad in [
            "", "a.", "a.+1", "a.-1", "a.x", "n.", "n.a/b", "x.1", "general",
        ] {
            assert!(Cursor::parse(Some(bad)).is_err(), "{bad:?}");
        }
        let huge = format!("a.{}", "9".repeat(40));
        assert!(Cursor::parse(Some(&huge)).is_err(), "past usize");
    }

    #[test]
    fn a_page_says_next_only_when_a_room_is_left_over_or_reading_stopped_early() {
        let mut full = PageBuilder::default();
        for i in 0..=ROOMS_PER_PAGE {
            full.push(
                room(&format!("r{i:03}"), 0),
                Cursor::Idle(format!("r{i:03}")),
            );
        }
        assert!(full.full());
        let page = full.finish(false);
        assert_eq!(page.rooms.len(), ROOMS_PER_PAGE);
        assert_eq!(
            page.next,
            Some(Cursor::Idle(format!("r{:03}", ROOMS_PER_PAGE - 1))),
            "the next page starts after the last room shown, not the extra one"
        );

        let mut last = PageBuilder::default();
        last.push(room("a", 2), Cursor::Active(1));
        assert_eq!(last.wanted(), ROOMS_PER_PAGE);
        assert_eq!(last.finish(true).next, None);

        let mut stopped = PageBuilder::default();
        stopped.push(room("a", 0), Cursor::Idle("a".into()));
        stopped.skip(Cursor::Idle("b".into()));
        assert_eq!(stopped.finish(false).next, Some(Cursor::Idle("b".into())));
    }

    #[test]
    fn busier_rooms_come_first_and_ties_go_by_name() {
        let mut rooms = vec![room("b", 1), room("c", 3), room("a", 1), room("d", 3)];
        by_activity(&mut rooms);
        let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["c", "d", "a", "b"]);
    }
}

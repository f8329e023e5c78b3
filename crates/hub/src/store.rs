//! Room history in SQLite: append with a per-room sequence number, read back after a sequence
//! number, keep at most a fixed number of messages per room. The database has one epoch,
//! made when it is created: a client holding numbers from a deleted database learns that they
//! no longer mean anything.
//!
//! The store is used from one thread only (the broker's), so it holds a plain
//! [`rusqlite::Connection`] and needs no pool or lock.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{HubError, Result};
use crate::protocol::ChatMessage;

/// The file name of the database inside the data directory.
pub const DB_FILE: &str = "history.sqlite3";

/// Persistent room history.
#[derive(Debug)]
pub(crate) struct Store {
    db: Connection,
    history_limit: u64,
    in_transaction: bool,
    epoch: String,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub(crate) fn open(dir: &Path, history_limit: u64) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| HubError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        let db = Connection::open(dir.join(DB_FILE))?;
        // WAL: readers never block the writer and a commit is one sequential append;
        // synchronous=NORMAL in WAL mode survives a process crash (not a power cut), which
        // is the durability a chat history needs without an fsync per message.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS messages (
                room TEXT NOT NULL,
                seq INTEGER NOT NULL,
                sender TEXT NOT NULL,
                time INTEGER NOT NULL,
                text TEXT NOT NULL,
                PRIMARY KEY (room, seq)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS meta (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            ) WITHOUT ROWID;",
        )?;
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?1)",
            params![crate::feed::new_epoch()],
        )?;
        let epoch = db.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |row| {
            row.get(0)
        })?;
        Ok(Store {
            db,
            history_limit: history_limit.max(1),
            in_transaction: false,
            epoch,
        })
    }

    /// The epoch of this database's history.
    pub(crate) fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The oldest sequence number still held for `room`, if any.
    pub(crate) fn first_seq(&self, room: &str) -> Result<Option<u64>> {
        let seq: Option<i64> = self
            .db
            .query_row(
                "SELECT MIN(seq) FROM messages WHERE room = ?1",
                params![room],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        Ok(seq.map(|s| s.max(0) as u64))
    }

    /// The highest sequence number stored for `room` (0 for a room without history).
    pub(crate) fn last_seq(&self, room: &str) -> Result<u64> {
        let seq: Option<i64> = self
            .db
            .query_row(
                "SELECT MAX(seq) FROM messages WHERE room = ?1",
                params![room],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Stores a message inside the current batch (see [`Store::commit`]) and trims the room
    /// to the history limit.
    pub(crate) fn append(&mut self, msg: &ChatMessage) -> Result<()> {
        if !self.in_transaction {
            self.db.execute_batch("BEGIN")?;
            self.in_transaction = true;
        }
        self.db
            .prepare_cached(
                "INSERT INTO messages (room, seq, sender, time, text) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                msg.room,
                msg.seq as i64,
                msg.from,
                msg.time as i64,
                msg.text
            ])?;
        if msg.seq > self.history_limit {
            self.db
                .prepare_cached("DELETE FROM messages WHERE room = ?1 AND seq <= ?2")?
                .execute(params![msg.room, (msg.seq - self.history_limit) as i64])?;
        }
        Ok(())
    }

    /// Makes every message appended since the last commit durable. Messages are delivered
    /// only after this returns, so nobody ever sees a message that a restart would lose.
    pub(crate) fn commit(&mut self) -> Result<()> {
        if self.in_transaction {
            self.in_transaction = false;
            if let Err(e) = self.db.execute_batch("COMMIT") {
                let _ = self.db.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Messages of `room` with a sequence number above `after`, oldest first, at most `limit`.
    pub(crate) fn since(&self, room: &str, after: u64, limit: u64) -> Result<Vec<ChatMessage>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT seq, sender, time, text FROM messages WHERE room = ?1 AND seq > ?2
             ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![room, after.min(i64::MAX as u64) as i64, clamp(limit)],
            |row| read_message(room, row),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last `limit` messages of `room`, oldest first.
    pub(crate) fn recent(&self, room: &str, limit: u64) -> Result<Vec<ChatMessage>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT seq, sender, time, text FROM messages WHERE room = ?1
             ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![room, clamp(limit)], |row| read_message(room, row))?;
        let mut messages = rows.collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(messages)
    }

    /// Up to `limit` rooms with history whose names sort after `after` (`""`: from the
    /// first), by name, each with its last sequence number.
    ///
    /// A skip-scan: each step finds the next room name with one look in the primary key's
    /// index and its last number with another, so a page costs O(`limit` log n) however many
    /// rooms and messages the database holds (a `GROUP BY room` would read every message of
    /// every room it passes).
    pub(crate) fn rooms_after(&self, after: &str, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.db.prepare_cached(
            "WITH RECURSIVE next(name) AS (
                SELECT (SELECT room FROM messages WHERE room > ?1 ORDER BY room LIMIT 1)
                UNION ALL
                SELECT (SELECT room FROM messages WHERE room > next.name ORDER BY room LIMIT 1)
                FROM next WHERE next.name IS NOT NULL
                LIMIT ?2
            )
            SELECT name, (SELECT MAX(seq) FROM messages WHERE room = next.name)
            FROM next WHERE name IS NOT NULL",
        )?;
        // One more step than rooms asked for: the last step may be the end (no name).
        let steps = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = stmt.query_map(params![after, steps], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Option<i64>>(1)?.unwrap_or(0).max(0) as u64,
            ))
        })?;
        let mut rooms = rows.collect::<Result<Vec<_>, _>>()?;
        rooms.truncate(limit);
        Ok(rooms)
    }

    /// Commits what is pending and checkpoints the write-ahead log into the database file.
    pub(crate) fn close(mut self) -> Result<()> {
        self.commit()?;
        self.db
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .or_else(|e| match e {
                // A checkpoint that returns rows is reported as an error by execute_batch on
                // some versions; the checkpoint itself happened.
                rusqlite::Error::ExecuteReturnedResults => Ok(()),
                e => Err(e),
            })?;
        self.db.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

fn clamp(limit: u64) -> i64 {
    limit.min(i64::MAX as u64) as i64
}

fn read_message(room: &str, row: &rusqlite::Row<'_>) -> rusqlite::Result<ChatMessage> {
    Ok(ChatMessage {
        room: room.to_owned(),
        seq: row.get::<_, i64>(0)?.max(0) as u64,
        from: row.get(1)?,
        time: row.get::<_, i64>(2)?.max(0) as u64,
        text: row.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, seq: u64, text: &str) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            seq,
            from: "alice".into(),
            time: 1_700_000_000_000 + seq,
            text: text.into(),
        }
    }

    #[test]
    fn appended_messages_survive_reopening_and_are_trimmed_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), 3).unwrap();
            for seq in 1..=5 {
                store
                    .append(&msg("general", seq, &format!("m{seq}")))
                    .unwrap();
            }
            store.append(&msg("other", 1, "x")).unwrap();
            store.commit().unwrap();
            store.close().unwrap();
        }
        let epoch = {
            let store = Store::open(dir.path(), 3).unwrap();
            store.epoch().to_owned()
        };
        let store = Store::open(dir.path(), 3).unwrap();
        assert_eq!(
            store.epoch(),
            epoch,
            "the epoch is the database's, kept across opens"
        );
        assert_eq!(store.first_seq("general").unwrap(), Some(3));
        assert_eq!(store.first_seq("nowhere").unwrap(), None);
        assert_eq!(store.last_seq("general").unwrap(), 5);
        assert_eq!(store.last_seq("nowhere").unwrap(), 0);
        let texts: Vec<_> = store
            .since("general", 0, 100)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["m3", "m4", "m5"]);
        assert_eq!(store.since("general", 4, 100).unwrap()[0].seq, 5);
        assert_eq!(store.recent("general", 2).unwrap()[0].seq, 4);
        assert_eq!(
            store.rooms_after("", 10).unwrap(),
            [("general".to_string(), 5), ("other".to_string(), 1)]
        );
        drop(store);
        let elsewhere = tempfile::tempdir().unwrap();
        let other = Store::open(elsewhere.path(), 3).unwrap();
        assert_ne!(other.epoch(), epoch, "a new database is a new epoch");
    }

    #[test]
    fn rooms_are_read_by_name_a_bounded_page_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 100).unwrap();
        for (i, room) in ["delta", "alpha", "charlie", "bravo", "echo"]
            .into_iter()
            .enumerate()
        {
            for seq in 1..=(i as u64 + 1) {
                store.append(&msg(room, seq, "x")).unwrap();
            }
        }
        // Uncommitted messages count: the broker lists rooms in the middle of a batch.
        let page = store.rooms_after("", 2).unwrap();
        assert_eq!(page, [("alpha".to_string(), 2), ("bravo".to_string(), 4)]);
        let page = store.rooms_after("bravo", 2).unwrap();
        assert_eq!(page, [("charlie".to_string(), 3), ("delta".to_string(), 1)]);
        let page = store.rooms_after("delta", 2).unwrap();
        assert_eq!(page, [("echo".to_string(), 5)]);
        assert!(store.rooms_after("echo", 2).unwrap().is_empty());
        assert!(store.rooms_after("", 0).unwrap().is_empty());
        // After a name that is not a room: from the next one that is.
        assert_eq!(store.rooms_after("c", 1).unwrap()[0].0, "charlie");
        store.commit().unwrap();
    }
}

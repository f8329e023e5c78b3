//! Pipe mode's input: stdin read on a thread of its own, as lines (one text message each) or
//! as raw chunks (`--binary`, one binary message per read).
//!
//! A plain thread rather than `tokio::io::stdin`: tokio reads stdin on its blocking pool,
//! and a runtime waits for that read to finish when it shuts down, so a client whose server
//! closed first would hang until the next line of input.

use std::io::{self, BufRead, Read};
use std::thread;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::exit::Failure;
use super::session::Input;

/// Messages read ahead of the connection: a little slack, then stdin waits (backpressure).
const QUEUE: usize = 16;

/// The most bytes one `--binary` message carries.
pub const CHUNK: usize = 64 * 1024;

/// Starts reading stdin; the channel closes when stdin ends.
pub fn stdin(binary: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(QUEUE);
    // If the thread cannot start, the sender goes with it and the input ends at once.
    let _ = thread::Builder::new().name("stdin".into()).spawn(move || {
        let stdin = io::stdin().lock();
        if binary {
            read_chunks(stdin, &tx);
        } else {
            read_lines(stdin, &tx);
        }
    });
    rx
}

/// One text message per line; "\n" and "\r\n" are both line ends. A line that is not UTF-8
/// stops the input with a failure: a text message must be UTF-8, and changing the data
/// silently is what websocat#216 complains about.
fn read_lines(mut input: impl BufRead, tx: &mpsc::Sender<Input>) {
    let mut buf = Vec::new();
    let mut number = 0u64;
    loop {
        buf.clear();
        let item = match input.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                number += 1;
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                match String::from_utf8(std::mem::take(&mut buf)) {
                    Ok(line) => Input::Line(line),
                    Err(_) => Input::Fail(Failure::usage(format!(
                        "line {number} of stdin is not UTF-8 (use --binary for binary data)"
                    ))),
                }
            }
            Err(e) => Input::Fail(Failure::usage(format!("cannot read stdin: {e}"))),
        };
        let stop = matches!(item, Input::Fail(_));
        if tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
}

/// One binary message per read of up to [`CHUNK`] bytes.
fn read_chunks(mut input: impl Read, tx: &mpsc::Sender<Input>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let item = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => Input::Binary(Bytes::copy_from_slice(&buf[..n])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Input::Fail(Failure::usage(format!("cannot read stdin: {e}"))),
        };
        let stop = matches!(item, Input::Fail(_));
        if tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
}

/// The input of `-x TEXT`: that one message, and then nothing.
pub fn execute(text: String) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(1);
    // The channel has room for it; the sender is dropped right after, which ends the input.
    let _ = tx.try_send(Input::Line(text));
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8]) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(64);
        read_lines(data, &tx);
        drop(tx);
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            match item {
                Input::Line(l) => out.push(l),
                Input::Fail(f) => out.push(format!("FAIL {}", f.message)),
                other => panic!("{other:?}"),
            }
        }
        out
    }

    #[test]
    fn lines_end_with_lf_or_crlf_and_the_last_may_have_none() {
        assert_eq!(lines(b"a\r\nb\n\nc"), ["a", "b", "", "c"]);
        assert_eq!(lines(b""), Vec::<String>::new());
    }

    #[test]
    fn a_line_that_is_not_utf8_stops_the_input() {
        assert_eq!(
            lines(b"ok\n\xff\nnever\n"),
            [
                "ok",
                "FAIL line 2 of stdin is not UTF-8 (use --binary for binary data)"
            ]
        );
    }

    #[test]
    fn binary_input_is_read_in_chunks() {
        let data = vec![7u8; CHUNK + 10];
        let (tx, mut rx) = mpsc::channel(64);
        read_chunks(&data[..], &tx);
        drop(tx);
        let mut total = 0;
        while let Ok(Input::Binary(b)) = rx.try_recv() {
            assert!(b.len() <= CHUNK);
            total += b.len();
        }
        assert_eq!(total, CHUNK + 10);
    }
}

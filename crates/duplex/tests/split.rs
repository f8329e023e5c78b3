//! Split connections: halves used from different tasks at the same time, answers the reader
//! hands to the writer (pong, close echo), and putting the halves back together.

// `accept_with` callbacks return `Result<(), Rejection>`, whose error is a whole HTTP response;
// clippy flags each such closure as a large `Err` variant.

mod common;

use bytes::Bytes;
use common::{accept_one, bounded, pair, payload};
use duplex::{CloseCode, CloseFrame, Error, Message};
use duplex_testkit::frame::{masked, CLOSE, FIN, TEXT};
use duplex_testkit::net::{raw_client, read_frame};

const N: usize = 1000;

/// Message `i` of a stream: text or binary, a few bytes to 8 KiB, content tied to `i`.
fn message(i: usize) -> Message {
    let len = [3, 100, 1500, 8 * 1024][i % 4] + i % 7;
    let data = payload(i, len);
    if i.is_multiple_of(2) {
        Message::text(String::from_utf8(data).unwrap())
    } else {
        Message::binary(data)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halves_in_different_tasks_then_reunite() {
    bounded(async {
        let (client, server) = pair().await;
        let (mut client_rd, mut client_wr) = client.split();
        let (mut server_rd, mut server_wr) = server.split();

        // Four tasks at once: each side writes N messages while it reads the other's N.
        let client_writer = tokio::spawn(async move {
            for i in 0..N {
                client_wr.send(message(i)).await.unwrap();
            }
            client_wr
        });
        let server_writer = tokio::spawn(async move {
            for i in 0..N {
                server_wr.send(message(N + i)).await.unwrap();
            }
            server_wr
        });
        let client_reader = tokio::spawn(async move {
            for i in 0..N {
                let msg = client_rd.recv().await.unwrap().unwrap();
                assert_eq!(msg, message(N + i), "client got message {i} wrong");
            }
            client_rd
        });
        let server_reader = tokio::spawn(async move {
            for i in 0..N {
                let msg = server_rd.recv().await.unwrap().unwrap();
                assert_eq!(msg, message(i), "server got message {i} wrong");
            }
            server_rd
        });
        let (client_wr, server_wr, client_rd, server_rd) =
            tokio::join!(client_writer, server_writer, client_reader, server_reader);

        let mut client = client_rd.unwrap().reunite(client_wr.unwrap()).unwrap();
        let mut server = server_rd.unwrap().reunite(server_wr.unwrap()).unwrap();

        // The reunited connections carry on where the halves stopped.
        client.send(Message::text("reunited")).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("reunited")
        );
        server
            .send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::Ping(Bytes::from_static(b"p"))
        );
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"p"))
        );
        let server_side = async {
            assert!(server.recv().await.unwrap().unwrap().is_close());
            assert!(server.recv().await.is_none());
        };
        let (closed, ()) = tokio::join!(client.close(None), server_side);
        closed.unwrap();
    })
    .await
}

#[tokio::test]
async fn reuniting_halves_of_different_connections_fails() {
    bounded(async {
        let (a, _a_server) = pair().await;
        let (b, _b_server) = pair().await;
        let (a_rd, a_wr) = a.split();
        let (b_rd, b_wr) = b.split();
        assert!(matches!(a_rd.reunite(b_wr), Err(Error::Usage(_))));
        assert!(matches!(b_rd.reunite(a_wr), Err(Error::Usage(_))));
    })
    .await
}

#[tokio::test]
async fn split_halves_know_the_protocol_and_reunite_keeps_it() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            duplex::accept_with(tcp, Default::default(), |i| {
                i.select_protocol(&["p1"]);
                Ok(())
            })
            .await
            .unwrap()
        });
        let (client, _) = duplex::ClientBuilder::new(&format!("ws://{addr}/"))
            .unwrap()
            .protocol("p1")
            .connect()
            .await
            .unwrap();
        let _server = server.await.unwrap();
        let (rd, wr) = client.split();
        assert_eq!(rd.protocol(), Some("p1"));
        let client = rd.reunite(wr).unwrap();
        assert_eq!(client.protocol(), Some("p1"));
    })
    .await
}

#[tokio::test]
async fn ping_read_by_the_reader_is_answered_by_the_writer() {
    bounded(async {
        let (client, mut server) = pair().await;
        let (mut rd, mut wr) = client.split();
        server
            .send(Message::Ping(Bytes::from_static(b"split ping")))
            .await
            .unwrap();
        assert_eq!(
            rd.recv().await.unwrap().unwrap(),
            Message::Ping(Bytes::from_static(b"split ping"))
        );
        // The pong goes out with the writer's next flush (or send).
        wr.flush().await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"split ping"))
        );
        // And with the next send.
        server
            .send(Message::Ping(Bytes::from_static(b"again")))
            .await
            .unwrap();
        assert_eq!(
            rd.recv().await.unwrap().unwrap(),
            Message::Ping(Bytes::from_static(b"again"))
        );
        wr.send(Message::text("data")).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"again"))
        );
        assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("data"));
    })
    .await
}

#[tokio::test]
async fn close_from_the_peer_through_split_halves() {
    bounded(async {
        let (client, mut server) = pair().await;
        let (mut rd, mut wr) = client.split();
        let client_side = async {
            match rd.recv().await.unwrap().unwrap() {
                Message::Close(Some(f)) => {
                    assert_eq!(f.code, CloseCode(4000));
                    assert_eq!(f.reason, "bye");
                }
                other => panic!("expected a close, got {other:?}"),
            }
            // The writer echoes the close.
            wr.flush().await.unwrap();
            assert!(rd.recv().await.is_none());
            assert!(matches!(
                wr.send(Message::text("late")).await,
                Err(Error::Closed)
            ));
        };
        let (closed, ()) = tokio::join!(
            server.close(Some(CloseFrame::new(CloseCode(4000), "bye"))),
            client_side
        );
        closed.unwrap();
    })
    .await
}

#[tokio::test]
async fn close_from_the_writer_half() {
    bounded(async {
        let (client, mut server) = pair().await;
        let (mut rd, mut wr) = client.split();
        wr.close(Some(CloseFrame::new(CloseCode(4000), "bye")))
            .await
            .unwrap();
        assert!(matches!(
            wr.send(Message::text("late")).await,
            Err(Error::Closed)
        ));
        let server_side = async {
            match server.recv().await.unwrap().unwrap() {
                Message::Close(Some(f)) => {
                    assert_eq!(f.code, CloseCode(4000));
                    assert_eq!(f.reason, "bye");
                }
                other => panic!("expected a close, got {other:?}"),
            }
            assert!(server.recv().await.is_none());
        };
        let client_side = async {
            match rd.recv().await.unwrap().unwrap() {
                Message::Close(Some(f)) => assert_eq!(f.code, CloseCode(4000)),
                other => panic!("expected the close echo, got {other:?}"),
            }
            assert!(rd.recv().await.is_none());
        };
        tokio::join!(server_side, client_side);
    })
    .await
}

/// A writer that sends a reply it owed after the reader saw the peer's close (the hub's answer
/// to a request that arrived just before it) gets it out before the close echo; the send after
/// that is refused, and the echo still goes out to a writer that only ever sends.
#[tokio::test]
async fn a_reply_sent_after_the_peer_closed_goes_before_the_close_echo() {
    bounded(async {
        let (client, mut server) = pair().await;
        let (mut rd, mut wr) = client.split();
        let client_side = async {
            assert!(rd.recv().await.unwrap().unwrap().is_close());
            wr.send(Message::text("reply")).await.unwrap();
            assert!(matches!(
                wr.send(Message::text("late")).await,
                Err(Error::Closed)
            ));
            assert!(rd.recv().await.is_none());
        };
        let server_side = async {
            server
                .send(Message::Close(Some(CloseFrame::new(
                    CloseCode(4000),
                    "bye",
                ))))
                .await
                .unwrap();
            assert_eq!(
                server.recv().await.unwrap().unwrap(),
                Message::text("reply")
            );
            match server.recv().await.unwrap().unwrap() {
                Message::Close(Some(f)) => assert_eq!(f.code, CloseCode(4000)),
                other => panic!("expected the close echo, got {other:?}"),
            }
            assert!(server.recv().await.is_none());
        };
        tokio::join!(server_side, client_side);
    })
    .await
}

/// An idle writer half that waits in `flush_control` still answers pings and sends the
/// keepalive pings its reader decides on.
#[tokio::test]
async fn an_idle_writer_answers_pings_and_keeps_alive_with_flush_control() {
    bounded(async {
        let quick = duplex::Config::default().keepalive(
            Some(std::time::Duration::from_millis(100)),
            Some(std::time::Duration::from_secs(5)),
        );
        let (mut client, server) = common::pair_configs(duplex::Config::default(), quick).await;
        let (mut reader, mut writer) = server.split();
        let writer_task = tokio::spawn(async move {
            // The application never sends anything: only protocol duties go out.
            while writer.flush_control().await.is_ok() {}
        });
        let reader_task = tokio::spawn(async move { while reader.recv().await.is_some() {} });

        client
            .send(Message::Ping(Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        let mut got_pong = false;
        let mut got_ping = false;
        while !(got_pong && got_ping) {
            match client.recv().await.unwrap().unwrap() {
                Message::Pong(p) => {
                    assert_eq!(&p[..], b"are you there");
                    got_pong = true;
                }
                Message::Ping(_) => got_ping = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        client.close(None).await.unwrap();
        reader_task.await.unwrap();
        writer_task.await.unwrap();
    })
    .await;
}

/// Compression state moves with the halves and back: a reunited connection keeps its
/// negotiated parameters and its compression context (with context takeover, a reset context
/// on one side would corrupt the next message the other side inflates).
#[tokio::test]
async fn split_and_reunite_keep_compression() {
    bounded(async {
        let on = duplex::Config::default().deflate(Some(duplex::DeflateConfig::default()));
        let (client, mut server) = common::pair_configs(on, on).await;
        let json = r#"{"type":"message","room":"general","text":"hello"}"#.repeat(20);
        let (mut rd, mut wr) = client.split();
        wr.send(Message::text(json.clone())).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text(json.clone())
        );
        server.send(Message::text(json.clone())).await.unwrap();
        assert_eq!(
            rd.recv().await.unwrap().unwrap(),
            Message::text(json.clone())
        );
        let mut client = rd.reunite(wr).unwrap();
        assert!(
            client.deflate().is_some(),
            "deflate lost across split + reunite"
        );
        for _ in 0..3 {
            client.send(Message::text(json.clone())).await.unwrap();
            assert_eq!(
                server.recv().await.unwrap().unwrap(),
                Message::text(json.clone())
            );
            server.send(Message::text(json.clone())).await.unwrap();
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text(json.clone())
            );
        }
    })
    .await
}

/// A close started on the writer half is still in progress after reunite: nothing more can be
/// sent, and the reunited connection reads the peer's echo and ends.
#[tokio::test]
async fn a_close_started_on_the_halves_completes_after_reunite() {
    bounded(async {
        let (client, mut server) = pair().await;
        let (rd, mut wr) = client.split();
        wr.close(Some(CloseFrame::new(CloseCode(4000), "bye")))
            .await
            .unwrap();
        let mut client = rd.reunite(wr).unwrap();
        assert!(matches!(
            client.send(Message::text("late")).await,
            Err(Error::Closed)
        ));
        let server_side = async {
            assert!(server.recv().await.unwrap().unwrap().is_close());
            assert!(server.recv().await.is_none());
        };
        let client_side = async {
            match client.recv().await.unwrap().unwrap() {
                Message::Close(Some(f)) => assert_eq!(f.code, CloseCode(4000)),
                other => panic!("expected the close echo, got {other:?}"),
            }
            assert!(client.recv().await.is_none());
        };
        tokio::join!(server_side, client_side);
    })
    .await
}

/// The hub's case from a raw peer: a request and a close frame arrive in one write; the server
/// reads the request, its writer task answers it after the reader has already seen the close,
/// and the peer gets the answer, then the close reply.
#[tokio::test]
async fn a_request_and_a_close_in_one_write_get_the_reply_before_the_close() {
    use tokio::io::AsyncWriteExt;
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let ws = duplex::accept(tcp).await.unwrap();
            let (mut rd, mut wr) = ws.split();
            let request = rd.recv().await.unwrap().unwrap();
            assert!(rd.recv().await.unwrap().unwrap().is_close());
            // Answered by another task, once the reader has moved on to the close.
            let reply = tokio::spawn(async move {
                wr.send(Message::text(format!("re: {}", request.as_text().unwrap())))
                    .await
                    .unwrap();
            });
            reply.await.unwrap();
            assert!(rd.recv().await.is_none());
        });
        let mut tcp = raw_client(addr, "/").await;
        let mut both = masked(FIN | TEXT, b"rooms?");
        both.extend(masked(FIN | CLOSE, &1000u16.to_be_bytes()));
        tcp.write_all(&both).await.unwrap();
        let reply = read_frame(&mut tcp).await;
        assert_eq!(
            (reply.opcode, &reply.payload[..]),
            (0x1, &b"re: rooms?"[..])
        );
        let close = read_frame(&mut tcp).await;
        assert_eq!(
            (close.opcode, &close.payload[..]),
            (0x8, &1000u16.to_be_bytes()[..])
        );
        server.await.unwrap();
    })
    .await
}

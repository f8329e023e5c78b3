//! Split connections: halves used from different tasks at the same time, answers the reader
//! hands to the writer (pong, close echo), and putting the halves back together.

// `accept_with` callbacks return `Result<(), Rejection>`, whose error is a whole HTTP response;
// clippy flags each such closure as a large `Err` variant.

mod common;

use bytes::Bytes;
use common::{accept_one, bounded, pair, payload};
use duplex::{CloseCode, CloseFrame, Error, Message};

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
        assert!(matches!(a_rd.reunite(b_wr), Err(Error::Reunite)));
        assert!(matches!(b_rd.reunite(a_wr), Err(Error::Reunite)));
    })
    .await
}

#[tokio::test]
async fn split_halves_know_the_protocol_and_reunite_keeps_it() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            duplex::server::accept_with(tcp, Default::default(), |i| {
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

#[tokio::test]
async fn send_after_the_peer_closed_still_echoes_the_close() {
    bounded(async {
        let (client, mut server) = pair().await;
        let (mut rd, mut wr) = client.split();
        let client_side = async {
            assert!(rd.recv().await.unwrap().unwrap().is_close());
            // A writer task that only ever sends (never flushes on its own) learns that the
            // connection is closed from its next send; the close echo must still go out.
            assert!(matches!(
                wr.send(Message::text("late")).await,
                Err(Error::Closed)
            ));
            assert!(rd.recv().await.is_none());
        };
        let started = std::time::Instant::now();
        let (closed, ()) = tokio::join!(
            server.close(Some(CloseFrame::new(CloseCode(4000), "bye"))),
            client_side
        );
        closed.unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "the server waited {:?} for the close echo",
            started.elapsed()
        );
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

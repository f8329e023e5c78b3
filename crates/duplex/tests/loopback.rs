//! The library's client against its own server over loopback TCP: data messages, fragments,
//! pings and the closing handshake, in both directions.

mod common;

use bytes::Bytes;
use common::{accept_one, bounded, pair};
use duplex::{CloseCode, CloseFrame, Error, Message, OpCode};

#[tokio::test]
async fn text_both_directions() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        client.send(Message::text("hello server")).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("hello server")
        );
        server.send(Message::text("hello client")).await.unwrap();
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::text("hello client")
        );
        // Non-ASCII text survives intact (and is validated as UTF-8 on receipt).
        client
            .send(Message::text("héllo wörld ✓ 🦀"))
            .await
            .unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap().as_text(),
            Some("héllo wörld ✓ 🦀")
        );
        client.send(Message::text("")).await.unwrap();
        assert_eq!(server.recv().await.unwrap().unwrap(), Message::text(""));
    })
    .await
}

#[tokio::test]
async fn binary_including_empty_and_one_mebibyte() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let big: Bytes = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        for payload in [
            Bytes::new(),
            Bytes::from_static(&[0, 1, 2, 255]),
            big.clone(),
        ] {
            // Client to server (masked on the wire) ...
            let (sent, got) =
                tokio::join!(client.send(Message::binary(payload.clone())), server.recv());
            sent.unwrap();
            assert_eq!(got.unwrap().unwrap(), Message::Binary(payload.clone()));
            // ... and server to client.
            let (sent, got) =
                tokio::join!(server.send(Message::binary(payload.clone())), client.recv());
            sent.unwrap();
            assert_eq!(got.unwrap().unwrap(), Message::Binary(payload));
        }
    })
    .await
}

#[tokio::test]
async fn server_initiated_messages() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let mut ws = duplex::accept(tcp).await.unwrap();
            // Speak first, right after the 101: these frames may arrive in the same read as
            // the response head and must not be lost by the client's handshake.
            for i in 0..10 {
                ws.send(Message::text(format!("push {i}"))).await.unwrap();
            }
            // Then wait for the client's acknowledgement.
            assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("ack"));
        });
        let (mut client, _) = duplex::connect(&format!("ws://{addr}/feed")).await.unwrap();
        for i in 0..10 {
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text(format!("push {i}"))
            );
        }
        client.send(Message::text("ack")).await.unwrap();
        server.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn many_messages_in_order_both_ways() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let n = 500;
        let to_server = async {
            for i in 0..n {
                client.send(Message::text(format!("c{i}"))).await.unwrap();
            }
            for i in 0..n {
                let msg = client.recv().await.unwrap().unwrap();
                assert_eq!(msg, Message::binary(format!("s{i}").into_bytes()));
            }
        };
        let to_client = async {
            for i in 0..n {
                let msg = server.recv().await.unwrap().unwrap();
                assert_eq!(msg, Message::text(format!("c{i}")));
                server
                    .send(Message::binary(format!("s{i}").into_bytes()))
                    .await
                    .unwrap();
            }
        };
        tokio::join!(to_server, to_client);
    })
    .await
}

#[tokio::test]
async fn fragmented_client_to_server_with_ping_between_fragments() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        // "é" is split across two fragments: UTF-8 is validated across fragment boundaries.
        client
            .send_fragment(OpCode::Text, Bytes::from_static(b"h\xc3"), false)
            .await
            .unwrap();
        client
            .send(Message::Ping(Bytes::from_static(b"mid")))
            .await
            .unwrap();
        client
            .send_fragment(OpCode::Continuation, Bytes::from_static(b"\xa9llo "), false)
            .await
            .unwrap();
        client
            .send_fragment(OpCode::Continuation, Bytes::from_static(b"world"), true)
            .await
            .unwrap();
        // The ping is delivered as it arrives, between the fragments; the message after it.
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::Ping(Bytes::from_static(b"mid"))
        );
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("héllo world")
        );
        // The server answered the ping on its own.
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"mid"))
        );

        // Binary fragments, including an empty middle fragment.
        client
            .send_fragment(OpCode::Binary, Bytes::from_static(&[1, 2]), false)
            .await
            .unwrap();
        client
            .send_fragment(OpCode::Continuation, Bytes::new(), false)
            .await
            .unwrap();
        client
            .send_fragment(OpCode::Continuation, Bytes::from_static(&[3]), true)
            .await
            .unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::binary(vec![1, 2, 3])
        );
        // After a fragmented message, ordinary messages work again.
        client.send(Message::text("after")).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("after")
        );
    })
    .await
}

#[tokio::test]
async fn fragmented_server_to_client_with_ping_between_fragments() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        server
            .send_fragment(OpCode::Text, Bytes::from_static(b"Hel"), false)
            .await
            .unwrap();
        server
            .send(Message::Ping(Bytes::from_static(b"between")))
            .await
            .unwrap();
        server
            .send_fragment(OpCode::Continuation, Bytes::from_static(b"lo"), true)
            .await
            .unwrap();
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::Ping(Bytes::from_static(b"between"))
        );
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::text("Hello")
        );
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"between"))
        );

        // A large binary message in 64 KiB fragments.
        let big: Vec<u8> = (0..300_000).map(|i| (i % 253) as u8).collect();
        let send = async {
            let mut chunks = big.chunks(64 * 1024).peekable();
            let mut first = true;
            while let Some(chunk) = chunks.next() {
                let op = if first {
                    OpCode::Binary
                } else {
                    OpCode::Continuation
                };
                first = false;
                server
                    .send_fragment(op, Bytes::copy_from_slice(chunk), chunks.peek().is_none())
                    .await
                    .unwrap();
            }
        };
        let (_, got) = tokio::join!(send, client.recv());
        assert_eq!(got.unwrap().unwrap(), Message::binary(big.clone()));
    })
    .await
}

#[tokio::test]
async fn sending_fragments_out_of_order_is_a_local_error() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let err = client
            .send_fragment(OpCode::Continuation, Bytes::from_static(b"x"), true)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        assert_eq!(err.close_code(), None, "a local misuse sends nothing");
        // The connection is unaffected.
        client.send(Message::text("still fine")).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("still fine")
        );
    })
    .await
}

#[tokio::test]
async fn ping_from_client_is_answered_with_pong() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        client
            .send(Message::Ping(Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        // The server sees the ping (its pong is already written by then) ...
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::Ping(Bytes::from_static(b"are you there"))
        );
        // ... and the client gets the pong with the same payload.
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"are you there"))
        );
        // An empty ping too.
        client.send(Message::Ping(Bytes::new())).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::Ping(Bytes::new())
        );
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::new())
        );
    })
    .await
}

#[tokio::test]
async fn ping_from_server_is_answered_with_pong() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        server
            .send(Message::Ping(Bytes::from_static(b"heartbeat")))
            .await
            .unwrap();
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::Ping(Bytes::from_static(b"heartbeat"))
        );
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"heartbeat"))
        );
    })
    .await
}

#[tokio::test]
async fn oversized_ping_is_refused_locally() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let err = client
            .send(Message::Ping(Bytes::from(vec![0; 126])))
            .await
            .unwrap_err();
        assert_eq!(err.close_code(), None);
        client.send(Message::text("ok")).await.unwrap();
        assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("ok"));
    })
    .await
}

fn bye() -> CloseFrame {
    CloseFrame::new(CloseCode(4000), "bye")
}

fn assert_bye(msg: Message) {
    match msg {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode(4000));
            assert_eq!(frame.reason, "bye");
        }
        other => panic!("expected a close frame with 4000 \"bye\", got {other:?}"),
    }
}

#[tokio::test]
async fn client_closes_with_code_and_reason() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let server_side = async {
            assert_bye(server.recv().await.unwrap().unwrap());
            assert!(server.recv().await.is_none());
        };
        let (closed, ()) = tokio::join!(client.close(Some(bye())), server_side);
        closed.unwrap();
        assert!(client.recv().await.is_none());
        assert!(server.recv().await.is_none());
        assert!(matches!(
            client.send(Message::text("late")).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            server.send(Message::text("late")).await,
            Err(Error::Closed)
        ));
    })
    .await
}

#[tokio::test]
async fn server_closes_with_code_and_reason() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let client_side = async {
            assert_bye(client.recv().await.unwrap().unwrap());
            assert!(client.recv().await.is_none());
        };
        let (closed, ()) = tokio::join!(server.close(Some(bye())), client_side);
        closed.unwrap();
        assert!(server.recv().await.is_none());
        assert!(client.recv().await.is_none());
        assert!(matches!(
            server.send(Message::text("late")).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            client.send(Message::text("late")).await,
            Err(Error::Closed)
        ));
    })
    .await
}

#[tokio::test]
async fn close_without_code() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let server_side = async {
            assert_eq!(server.recv().await.unwrap().unwrap(), Message::Close(None));
            assert!(server.recv().await.is_none());
        };
        let (closed, ()) = tokio::join!(client.close(None), server_side);
        closed.unwrap();
    })
    .await
}

#[tokio::test]
async fn close_as_a_message_lets_the_closer_read_what_is_in_flight() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        // The server sends data, then the client starts closing before reading it.
        server.send(Message::text("in flight")).await.unwrap();
        client
            .send(Message::Close(Some(CloseFrame::new(
                CloseCode::NORMAL,
                "done",
            ))))
            .await
            .unwrap();
        let client_side = async {
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text("in flight")
            );
            match client.recv().await.unwrap().unwrap() {
                Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::NORMAL),
                other => panic!("expected the close echo, got {other:?}"),
            }
            assert!(client.recv().await.is_none());
        };
        let server_side = async {
            match server.recv().await.unwrap().unwrap() {
                Message::Close(Some(f)) => {
                    assert_eq!(f.code, CloseCode::NORMAL);
                    assert_eq!(f.reason, "done");
                }
                other => panic!("expected a close, got {other:?}"),
            }
            assert!(server.recv().await.is_none());
        };
        tokio::join!(client_side, server_side);
    })
    .await
}

#[tokio::test]
async fn peer_dropping_the_connection_is_an_abnormal_closure() {
    bounded(async {
        let (mut client, server) = pair().await;
        drop(server);
        assert!(matches!(
            client.recv().await,
            Some(Err(Error::AbnormalClosure))
        ));
        assert!(client.recv().await.is_none());
    })
    .await
}

#[tokio::test]
async fn stream_and_sink_traits() {
    use futures_util::{SinkExt, StreamExt};
    bounded(async {
        let (mut client, mut server) = pair().await;
        SinkExt::send(&mut client, Message::text("via sink"))
            .await
            .unwrap();
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            Message::text("via sink")
        );
        // Sink::close sends a normal close frame; the stream then ends after the echo.
        SinkExt::close(&mut server).await.unwrap();
        match client.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::NORMAL),
            other => panic!("expected a close, got {other:?}"),
        }
        // The client waits for the server to end the TCP connection, which the server does
        // once it has read the echo.
        let server_side = async {
            match server.next().await {
                Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::NORMAL),
                other => panic!("expected the close echo, got {other:?}"),
            }
            assert!(server.next().await.is_none());
        };
        let (c, ()) = tokio::join!(client.next(), server_side);
        assert!(c.is_none());
    })
    .await
}

#[tokio::test]
async fn sender_is_slowed_by_a_peer_that_does_not_read() {
    use futures_util::SinkExt;
    bounded(async {
        let (mut client, mut server) = pair().await;
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        // The client reads nothing: once the socket buffers are full, sending must wait
        // instead of queueing without bound.
        let mut completed = 0;
        loop {
            let send = server.send(Message::Binary(chunk.clone()));
            match tokio::time::timeout(std::time::Duration::from_millis(300), send).await {
                Ok(sent) => {
                    sent.unwrap();
                    completed += 1;
                    assert!(
                        completed < 2000,
                        "128 MiB sent to a peer that reads nothing"
                    );
                }
                Err(_) => break,
            }
        }
        // The blocked send had queued its message: at most that one is buffered.
        assert!(server.buffered() > 0);
        assert!(
            server.buffered() <= chunk.len() + 14,
            "{} bytes buffered",
            server.buffered()
        );
        // Once the client reads, everything arrives, the interrupted message exactly once.
        let read_all = async {
            for i in 0..=completed {
                match client.recv().await.unwrap().unwrap() {
                    Message::Binary(b) => assert_eq!(b, chunk, "message {i}"),
                    other => panic!("message {i}: {other:?}"),
                }
            }
        };
        let (flushed, ()) = tokio::join!(server.flush(), read_all);
        flushed.unwrap();
        assert_eq!(server.buffered(), 0);
        server.send(Message::text("last")).await.unwrap();
        assert_eq!(client.recv().await.unwrap().unwrap(), Message::text("last"));
    })
    .await
}

#[tokio::test]
async fn simultaneous_close_from_both_sides() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let started = std::time::Instant::now();
        let (c, s) = tokio::join!(
            client.close(Some(CloseFrame::new(CloseCode(4001), "client"))),
            server.close(Some(CloseFrame::new(CloseCode(4002), "server")))
        );
        c.unwrap();
        s.unwrap();
        // Neither side had to wait for a close timeout.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(client.recv().await.is_none());
        assert!(server.recv().await.is_none());
    })
    .await
}

#[tokio::test]
async fn largest_control_payload_round_trips() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let payload = Bytes::from(vec![b'p'; 125]);
        client.send(Message::Ping(payload.clone())).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::Ping(payload.clone())
        );
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::Pong(payload)
        );
        // An unsolicited pong is delivered as is.
        server
            .send(Message::Pong(Bytes::from_static(b"unsolicited")))
            .await
            .unwrap();
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"unsolicited"))
        );
    })
    .await
}

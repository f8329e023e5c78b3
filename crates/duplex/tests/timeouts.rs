//! Keepalive and the close timeout, with short test-configured durations, observed on the wire
//! by a hand-written peer: a ping after the connection was idle for `ping_interval`, none while
//! traffic flows, the connection failed with 1011 when no pong comes within `ping_timeout`, the
//! round-trip time measured, and a peer that never answers a close frame dropped after
//! `close_timeout`. (The opening-handshake timeout is in `handshake.rs`, the TLS one in
//! `tls.rs`, the write timeout in `memory_bound.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::{bounded, serve_one};
use duplex::{CloseCode, CloseFrame, Config, Error, Message};
use duplex_testkit::frame::{masked, CLOSE, FIN, PING, PONG, TEXT};
use duplex_testkit::net::{expect_eof, raw_client, read_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn keepalive(interval_ms: u64, timeout_ms: u64) -> Config {
    Config::default().keepalive(
        Some(Duration::from_millis(interval_ms)),
        Some(Duration::from_millis(timeout_ms)),
    )
}

/// A duplex server using `config` that reads until the connection ends, and a raw client
/// connected to it. The server task returns how reading ended and the measured RTT.
async fn server_and_raw_client(
    config: Config,
) -> (
    TcpStream,
    tokio::task::JoinHandle<(Option<Error>, Option<Duration>)>,
) {
    let (addr, server) = serve_one(config, |mut ws| async move {
        let mut ended = None;
        while let Some(msg) = ws.recv().await {
            if let Err(e) = msg {
                ended = Some(e);
                break;
            }
        }
        (ended, ws.rtt())
    });
    (raw_client(addr, "/").await, server)
}

#[tokio::test]
async fn idle_connection_gets_a_ping_and_its_pong_gives_the_rtt() {
    bounded(async {
        let (mut client, server) = server_and_raw_client(keepalive(200, 2000)).await;
        let started = Instant::now();
        let ping = read_frame(&mut client).await;
        let waited = started.elapsed();
        assert_eq!(ping.opcode, PING);
        assert!(ping.fin);
        assert!(
            waited >= Duration::from_millis(150),
            "pinged after {waited:?}"
        );
        assert!(waited < Duration::from_secs(2), "pinged after {waited:?}");
        // Answer 50 ms later: the RTT the server measures includes that delay.
        tokio::time::sleep(Duration::from_millis(50)).await;
        client
            .write_all(&masked(FIN | PONG, &ping.payload))
            .await
            .unwrap();
        client
            .write_all(&masked(FIN | CLOSE, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        let (ended, rtt) = server.await.unwrap();
        assert!(ended.is_none(), "{ended:?}");
        let rtt = rtt.expect("no RTT measured");
        assert!(
            rtt >= Duration::from_millis(50) && rtt < Duration::from_secs(2),
            "{rtt:?}"
        );
    })
    .await
}

#[tokio::test]
async fn traffic_means_no_ping() {
    bounded(async {
        let (mut client, server) = server_and_raw_client(keepalive(300, 2000)).await;
        // A message every 100 ms for a second: never idle for 300 ms.
        for i in 0..10 {
            client
                .write_all(&masked(FIN | TEXT, format!("tick {i}").as_bytes()))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut byte = [0u8; 1];
        let quiet = tokio::time::timeout(Duration::from_millis(50), client.read(&mut byte)).await;
        assert!(
            quiet.is_err(),
            "the server sent something while traffic flowed"
        );
        // Once traffic stops, the ping comes.
        assert_eq!(read_frame(&mut client).await.opcode, PING);
        drop(client);
        server.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn no_pong_fails_the_connection_with_1011() {
    bounded(async {
        let (mut client, server) = server_and_raw_client(keepalive(100, 300)).await;
        let ping = read_frame(&mut client).await;
        assert_eq!(ping.opcode, PING);
        let pinged = Instant::now();
        // Say nothing. The server gives up ping_timeout later with 1011 and closes TCP.
        let close = read_frame(&mut client).await;
        let waited = pinged.elapsed();
        assert_eq!(close.opcode, CLOSE);
        assert_eq!(close.close_code(), Some(1011));
        assert_eq!(close.close_reason(), b"keepalive ping timeout");
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        expect_eof(&mut client, "after the 1011").await;
        let (ended, rtt) = server.await.unwrap();
        let ended = ended.expect("the server kept reading");
        assert!(
            matches!(ended, Error::KeepaliveTimeout(d) if d == Duration::from_millis(300)),
            "{ended:?}"
        );
        assert!(ended.is_timeout());
        assert_eq!(ended.close_code(), Some(CloseCode::INTERNAL));
        assert_eq!(rtt, None);
    })
    .await
}

#[tokio::test]
async fn pongs_to_the_applications_own_pings_do_not_count() {
    bounded(async {
        let (mut client, server) = server_and_raw_client(keepalive(100, 300)).await;
        let ping = read_frame(&mut client).await;
        assert_eq!(ping.opcode, PING);
        // An unsolicited pong with another payload is not an answer.
        client
            .write_all(&masked(FIN | PONG, b"something else"))
            .await
            .unwrap();
        let close = read_frame(&mut client).await;
        assert_eq!(close.opcode, CLOSE);
        let (ended, _) = server.await.unwrap();
        assert!(
            matches!(ended, Some(Error::KeepaliveTimeout(_))),
            "{ended:?}"
        );
    })
    .await
}

/// The keepalive timer wakes whichever task reads now: a connection read for a while in one
/// task, then handed to another (which reads on), still pings when it goes quiet.
#[tokio::test]
async fn a_connection_handed_to_another_task_still_pings() {
    bounded(async {
        let (addr, first) = serve_one(keepalive(300, 2000), |mut ws| async move {
            read_for(&mut ws, Duration::from_millis(50)).await;
            ws
        });
        let mut client = raw_client(addr, "/").await;
        let mut ws = first.await.unwrap();
        let second = tokio::spawn(async move { while let Some(Ok(_)) = ws.recv().await {} });
        let ping = read_frame(&mut client).await;
        assert_eq!(ping.opcode, PING);
        drop(client);
        second.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn keepalive_off_sends_nothing() {
    bounded(async {
        let config = Config::default().keepalive(None, None);
        let (mut client, server) = server_and_raw_client(config).await;
        let mut byte = [0u8; 1];
        let quiet = tokio::time::timeout(Duration::from_millis(400), client.read(&mut byte)).await;
        assert!(quiet.is_err());
        drop(client);
        server.await.unwrap();
    })
    .await
}

/// Reads (and discards) for `period`; `recv` is cancel safe, so stopping loses nothing.
async fn read_for<S>(ws: &mut duplex::WebSocket<S>, period: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(period, async {
        while let Some(m) = ws.recv().await {
            m.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn library_peers_answer_each_others_keepalive() {
    bounded(async {
        let config = keepalive(100, 1000);
        let (mut client, mut server) = common::pair_with(config).await;
        // Both sides only read for 600 ms: each pings the other, and each answers.
        let c = read_for(&mut client, Duration::from_millis(600));
        let s = read_for(&mut server, Duration::from_millis(600));
        tokio::join!(c, s);
        let (crtt, srtt) = (client.rtt().unwrap(), server.rtt().unwrap());
        assert!(crtt < Duration::from_millis(500) && srtt < Duration::from_millis(500));
        // And the connection is still fine.
        client.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("still here")
        );
    })
    .await
}

#[tokio::test]
async fn split_reader_pings_through_the_writer_and_never_fails_for_an_idle_writer() {
    bounded(async {
        let config = keepalive(100, 200);
        let (addr, server) = serve_one(config, |ws| async move {
            let (mut reader, mut writer) = ws.split();
            // The writer stays idle for 600 ms, three times interval + timeout: the ping is
            // not sent, so the reader must not give up on it.
            let idle = tokio::time::timeout(Duration::from_millis(600), reader.recv()).await;
            assert!(idle.is_err(), "reader ended: {idle:?}");
            writer.flush().await.unwrap();
            // Now the ping is out; the client answers, and the reader measures the RTT.
            let pong = reader.recv().await.unwrap().unwrap();
            assert!(matches!(pong, Message::Pong(_)), "{pong:?}");
            reader.rtt()
        });
        let mut client = raw_client(addr, "/").await;
        let ping = read_frame(&mut client).await;
        assert_eq!(ping.opcode, PING);
        client
            .write_all(&masked(FIN | PONG, &ping.payload))
            .await
            .unwrap();
        let rtt = server.await.unwrap().expect("no RTT");
        assert!(rtt < Duration::from_millis(500), "{rtt:?}");
    })
    .await
}

#[tokio::test]
async fn split_reader_fails_after_an_unanswered_ping_and_the_writer_sends_1011() {
    bounded(async {
        let config = keepalive(100, 200);
        let (addr, server) = serve_one(config, |ws| async move {
            let (mut reader, mut writer) = ws.split();
            // A writer flushing on a timer, as a read-only task should.
            let flusher = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if writer.flush().await.is_err() {
                        break;
                    }
                }
            };
            let read = async {
                loop {
                    if let Err(e) = reader.recv().await.unwrap() {
                        return e;
                    }
                }
            };
            tokio::select! {
                e = read => {
                    writer.flush().await.unwrap();
                    e
                }
                () = flusher => panic!("the writer failed first"),
            }
        });
        let mut client = raw_client(addr, "/").await;
        assert_eq!(read_frame(&mut client).await.opcode, PING);
        let close = read_frame(&mut client).await;
        assert_eq!(close.opcode, CLOSE);
        assert_eq!(close.close_code(), Some(1011));
        let err = server.await.unwrap();
        assert!(matches!(err, Error::KeepaliveTimeout(_)), "{err:?}");
    })
    .await
}

#[tokio::test]
async fn peer_that_never_answers_a_close_is_dropped_after_close_timeout() {
    bounded(async {
        let config = Config::default().close_timeout(Duration::from_millis(300));
        let (addr, server) = serve_one(config, |mut ws| async move {
            let started = Instant::now();
            let result = ws
                .close(Some(CloseFrame::new(
                    CloseCode::GOING_AWAY,
                    "shutting down",
                )))
                .await;
            (result, started.elapsed())
        });
        let mut client = raw_client(addr, "/").await;
        // The server's close frame: 1001 going away.
        let close = read_frame(&mut client).await;
        assert_eq!(close.opcode, CLOSE);
        assert_eq!(close.close_code(), Some(1001));
        assert_eq!(close.close_reason(), b"shutting down");
        // Never answer; the server gives up after close_timeout.
        let (result, waited) = server.await.unwrap();
        assert!(
            matches!(result, Err(Error::Timeout("close handshake"))),
            "{result:?}"
        );
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        // The transport is gone: the client reads EOF.
        expect_eof(&mut client, "after the close timeout").await;
    })
    .await
}

#[tokio::test]
async fn going_away_close_is_seen_by_a_library_client() {
    bounded(async {
        let (mut client, mut server) = common::pair().await;
        let closing = async {
            server
                .close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "restart")))
                .await
                .unwrap()
        };
        let reading = async {
            match client.recv().await.unwrap().unwrap() {
                Message::Close(Some(frame)) => frame,
                other => panic!("{other:?}"),
            }
        };
        let ((), frame) = tokio::join!(closing, reading);
        assert_eq!(frame.code, CloseCode::GOING_AWAY);
        assert_eq!(frame.reason.as_str(), "restart");
        assert!(client.recv().await.is_none());
    })
    .await
}

//! RFC 8441 against an independent implementation: Node's `http2` module with
//! `enableConnectProtocol`, as the server for our client (h2c and TLS) and as the client of our
//! server. Node has no WebSocket framing of its own on HTTP/2 streams, so the scripts carry a
//! minimal frame writer and reader (masked from the client, unmasked from the server; text,
//! binary, close). Skipped with a message where `node` is missing, a failure under CI.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::bounded;
use duplex::http2::{self, Client};
use duplex::{ClientBuilder, Error, MaybeTlsStream, Message};
use duplex_testkit::node::NodeScript;
use duplex_testkit::pki::TestPki;
use http::{StatusCode, Version};
use tokio::net::TcpListener;

/// WebSocket frames over a Node `Http2Stream`: `frame()` writes one, `Reader` parses them
/// from the stream's data events.
const FRAMES_JS: &str = r#"
const crypto = require('crypto');

function frame(opcode, payload, mask, fin = true) {
  const len = payload.length;
  let header;
  if (len < 126) { header = Buffer.alloc(2); header[1] = len; }
  else if (len < 65536) { header = Buffer.alloc(4); header[1] = 126; header.writeUInt16BE(len, 2); }
  else { header = Buffer.alloc(10); header[1] = 127; header.writeBigUInt64BE(BigInt(len), 2); }
  header[0] = (fin ? 0x80 : 0) | opcode;
  if (!mask) return Buffer.concat([header, payload]);
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  return Buffer.concat([header, key, body]);
}

class Reader {
  constructor(stream) {
    this.chunks = []; this.buffered = 0; this.frames = []; this.waiting = []; this.ended = false;
    stream.on('data', (c) => { this.chunks.push(c); this.buffered += c.length; this.parse(); });
    stream.on('end', () => { this.ended = true; this.flush(); });
    stream.on('error', (e) => { this.error = e; this.ended = true; this.flush(); });
  }
  parse() {
    let buf = Buffer.concat(this.chunks);
    for (;;) {
      if (buf.length < 2) break;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f, off = 2;
      if (len === 126) { if (buf.length < 4) break; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) break; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      let key = null;
      if (masked) { if (buf.length < off + 4) break; key = buf.subarray(off, off + 4); off += 4; }
      if (buf.length < off + len) break;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (key) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
      this.frames.push({ fin: (buf[0] & 0x80) !== 0, rsv: buf[0] & 0x70, opcode: buf[0] & 0x0f, masked, payload });
      buf = buf.subarray(off + len);
    }
    this.chunks = buf.length ? [buf] : [];
    this.flush();
  }
  flush() {
    while (this.waiting.length && (this.frames.length || this.ended)) {
      const [resolve, reject] = this.waiting.shift();
      if (this.frames.length) resolve(this.frames.shift());
      else reject(this.error || new Error('stream ended before a frame'));
    }
  }
  next() { return new Promise((resolve, reject) => { this.waiting.push([resolve, reject]); this.flush(); }); }
}
"#;

/// An h2c (or, given a certificate and key, TLS) server echoing WebSocket frames on extended
/// CONNECT streams and answering other requests with a page; prints `SESSION` per connection.
const SERVER_JS: &str = r#"
const http2 = require('http2');
const fs = require('fs');
const [cert, key] = process.argv.slice(2);
const settings = { enableConnectProtocol: true };
const server = cert
  ? http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key), settings })
  : http2.createServer({ settings });
server.on('session', () => console.log('SESSION'));
server.on('stream', (stream, headers) => {
  stream.on('error', () => {});
  if (headers[':method'] !== 'CONNECT') {
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end('node page ' + headers[':path']);
    return;
  }
  if (headers[':protocol'] !== 'websocket' || headers['sec-websocket-version'] !== '13'
      || headers['sec-websocket-key'] !== undefined || headers['upgrade'] !== undefined) {
    stream.respond({ ':status': 400 });
    stream.end('bad extended CONNECT');
    return;
  }
  const answer = { ':status': 200 };
  const offered = (headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
  if (offered.includes('echo.v1')) answer['sec-websocket-protocol'] = 'echo.v1';
  stream.respond(answer);
  const reader = new Reader(stream);
  (async () => {
    for (;;) {
      const f = await reader.next();
      if (!f.masked) { stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR); return; }
      if (f.opcode === 8) { stream.end(frame(8, f.payload, false)); return; }
      if (f.opcode === 9) { stream.write(frame(10, f.payload, false)); continue; }
      stream.write(frame(f.opcode, f.payload, false, f.fin));
    }
  })().catch(() => {});
});
server.listen(0, '127.0.0.1', () => console.log('PORT ' + server.address().port));
"#;

/// A client opening three WebSockets and a GET on one session to `url`; prints `OK`.
const CLIENT_JS: &str = r#"
const http2 = require('http2');
const url = process.argv[2];
const fail = (e) => { console.error('FAIL', e && e.stack || e); process.exit(1); };
const expect = (cond, what) => { if (!cond) throw new Error(what); };
const session = http2.connect(url);
session.on('error', fail);

async function websocket(i) {
  const req = session.request({
    ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/node/' + i,
    'sec-websocket-version': '13', 'sec-websocket-protocol': 'echo.v1',
  }, { endStream: false });
  const reader = new Reader(req);
  const headers = await new Promise((resolve, reject) => { req.on('response', resolve); req.on('error', reject); });
  expect(headers[':status'] === 200, 'status ' + headers[':status']);
  expect(headers['sec-websocket-protocol'] === 'echo.v1', 'subprotocol ' + headers['sec-websocket-protocol']);
  expect(headers['sec-websocket-accept'] === undefined, 'no accept key over HTTP/2');
  const text = Buffer.from('hello ' + i + ' from node');
  req.write(frame(1, text, true));
  let f = await reader.next();
  expect(f.opcode === 1 && !f.masked && f.fin && f.payload.equals(text), 'text echo');
  // Larger than the 65,535-byte initial window: flow control in both directions.
  const big = require('crypto').randomBytes(300000);
  req.write(frame(2, big, true));
  f = await reader.next();
  expect(f.opcode === 2 && f.payload.equals(big), 'binary echo of ' + f.payload.length);
  // A message in two fragments comes back whole.
  req.write(frame(1, Buffer.from('frag'), true, false));
  req.write(frame(0, Buffer.from('mented'), true, true));
  f = await reader.next();
  expect(f.opcode === 1 && f.payload.toString() === 'fragmented', 'fragmented echo');
  req.write(frame(8, Buffer.from([0x03, 0xe8]), true));
  f = await reader.next();
  expect(f.opcode === 8 && f.payload.readUInt16BE(0) === 1000, 'close echoed');
  req.end();
  await new Promise((resolve) => { if (req.readableEnded) resolve(); else req.on('end', resolve); req.resume(); });
}

async function page() {
  const req = session.request({ ':path': '/page' });
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  const headers = await new Promise((resolve, reject) => { req.on('response', resolve); req.on('error', reject); });
  await new Promise((resolve) => req.on('end', resolve));
  expect(headers[':status'] === 200, 'page status');
  expect(Buffer.concat(chunks).toString() === 'page from duplex\n', 'page body');
}

session.once('remoteSettings', async (settings) => {
  try {
    expect(settings.enableConnectProtocol === true, 'SETTINGS_ENABLE_CONNECT_PROTOCOL');
    await Promise.all([websocket(0), websocket(1), websocket(2), page()]);
    console.log('OK');
    session.close();
  } catch (e) { fail(e); }
});
"#;

fn script(name: &str, body: &str) -> Option<NodeScript> {
    NodeScript::new(name, &format!("{FRAMES_JS}\n{body}"))
}

/// Our client against Node's server: WebSockets on one session, a page on the same session.
async fn against_node(url: &str, pki: Option<&TestPki>) {
    let mut builder = ClientBuilder::new(url).unwrap().protocol("echo.v1");
    if let Some(pki) = pki {
        builder = builder.ca_file(pki.ca());
    }
    let client = Client::connect(builder.clone()).await.unwrap();
    assert!(client.supports_websockets());
    let mut sockets = Vec::new();
    for path in ["/x", "/y", "/z"] {
        let (ws, response) = client.websocket(path).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(ws.protocol(), Some("echo.v1"));
        sockets.push(ws);
    }
    let big = Message::binary(vec![0x5a; 400_000]);
    for (i, ws) in sockets.iter_mut().enumerate() {
        let text = Message::text(format!("to node {i}"));
        ws.send(text.clone()).await.unwrap();
        ws.send(big.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), text);
        assert_eq!(ws.recv().await.unwrap().unwrap(), big);
    }
    let mut get = http::Request::new(Bytes::new());
    *get.uri_mut() = http::Uri::from_static("/page");
    let page = client.request(get).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.body().as_ref(), b"node page /page");
    for mut ws in sockets {
        ws.close(None).await.unwrap();
        match ws.recv().await {
            Some(Ok(Message::Close(_))) | None => {}
            other => panic!("after close: {other:?}"),
        }
    }
    // And the one-shot client, which says it used HTTP/2.
    let (mut ws, response) = builder.http2(true).connect().await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    ws.send(Message::text("one shot")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("one shot"));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_node_http2_server() {
    let Some(script) = script("server.js", SERVER_JS) else {
        return;
    };
    bounded(async {
        let node = script.serve(&[]);
        against_node(&format!("ws://127.0.0.1:{}/", node.port()), None).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sessions = node.lines().iter().filter(|l| *l == "SESSION").count();
        assert_eq!(sessions, 2, "one session for Client, one for connect()");

        let pki = TestPki::new(&["localhost"]);
        let cert = pki.cert();
        let key = pki.key();
        let node = script.serve(&[cert.to_str().unwrap(), key.to_str().unwrap()]);
        against_node(&format!("wss://localhost:{}/", node.port()), Some(&pki)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_http2_client_against_our_server() {
    let Some(script) = script("client.js", CLIENT_JS) else {
        return;
    };
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let websockets = Arc::new(AtomicUsize::new(0));
        let count = websockets.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            assert!(http2::peek_preface(&tcp, Duration::from_secs(5)).await?);
            let mut conn = http2::accept(MaybeTlsStream::Plain(tcp), Default::default()).await?;
            let mut tasks = Vec::new();
            while let Some(request) = conn.next().await {
                let request = request?;
                let count = count.clone();
                tasks.push(tokio::spawn(async move {
                    if !request.is_websocket() {
                        return request
                            .respond(http::Response::new("page from duplex\n"))
                            .await;
                    }
                    assert!(request.request().uri().path().starts_with("/node/"));
                    let mut ws = request
                        .upgrade(|incoming| {
                            incoming.select_protocol(&["echo.v1"]);
                            Ok(())
                        })
                        .await?;
                    while let Some(msg) = ws.recv().await {
                        let msg = msg?;
                        if msg.is_text() || msg.is_binary() {
                            ws.send(msg).await?;
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }));
            }
            for task in tasks {
                task.await.unwrap()?;
            }
            Ok::<_, Error>(())
        });
        let url = format!("http://127.0.0.1:{port}");
        let output =
            tokio::task::spawn_blocking(move || script.run(&[&url], Duration::from_secs(8)))
                .await
                .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("OK"),
            "node client failed: {stdout}\n{stderr}"
        );
        server.await.unwrap().unwrap();
        assert_eq!(websockets.load(Ordering::SeqCst), 3);
    })
    .await;
}

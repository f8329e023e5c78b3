//! The cross-node workload (`--crossnode`): one chat room whose `-c` subscribers are spread
//! evenly over several server nodes (the URL is a comma list: subscriber `i` goes to node
//! `i % nodes`), and `--publishers` publishers on the first node. The nodes share the room
//! through something of their own (Redis pub/sub for `duplex serve --redis` and for Socket.IO's
//! Redis adapter), so most deliveries cross from one node to another.
//!
//! Every publisher keeps at most `--in-flight` messages ahead of the slowest delivery of its
//! own messages, and with `--rate` sends no faster than its share of that many messages per
//! second. Latency runs from the send (the stamp in the text) to each subscriber's read; the
//! server CPU is the sum over every `--server-pid` (both nodes, and Redis if its pid is given).
//!
//! Every connection reads all the time, from its join to the end: a server that queues
//! presence events or pings for a client that does not read would drop it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use tokio::sync::{Notify, OnceCell, Semaphore};

use super::connections::close;
use super::measure::{histogram, record, Latencies, Totals, Window};
use super::plans::BenchArgs;
use super::report::{print_report, Summary};
use super::wire::{Incoming, Protocol, Stamp};

/// Slots of each publisher's delivery counts: more than any sensible `--in-flight`.
const RING: usize = 4096;

/// The longest wait for every subscriber to be in the room.
const PRIMING: Duration = Duration::from_secs(120);

/// The longest wait for a Socket.IO session's open and connect packets after the upgrade.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// One publisher's delivery counts.
#[derive(Debug)]
struct Publisher {
    /// Deliveries of message `seq`, in slot `seq % RING`.
    counts: Vec<AtomicU64>,
    /// The message the publisher waits to see delivered to every open subscriber.
    wait_seq: AtomicU64,
    wake: Notify,
}

/// Bookkeeping shared by the publishers, the subscribers and the main task.
#[derive(Debug)]
struct Room {
    /// Subscribers connected, in the room and still receiving.
    open: AtomicU64,
    /// Subscribers whose connection attempt is over (open or failed).
    settled: AtomicU64,
    /// Publishers connected and in the room.
    publishing: AtomicU64,
    /// Subscribers that received at least one probe.
    joined: AtomicU64,
    /// The number of the last probe, and how many subscribers received it.
    final_probe: AtomicU64,
    final_seen: AtomicU64,
    /// Set (and told) once every subscriber received the last probe.
    primed: AtomicBool,
    primed_told: Notify,
    /// The instant the stamps count from.
    epoch: Instant,
    publishers: Vec<Publisher>,
    /// Messages the publishers sent in the window.
    sent: AtomicU64,
    /// Deliveries in the window, by the node of the subscriber.
    by_node: Vec<AtomicU64>,
}

impl Room {
    fn new(publishers: usize, nodes: usize) -> Self {
        Room {
            open: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            publishing: AtomicU64::new(0),
            joined: AtomicU64::new(0),
            final_probe: AtomicU64::new(u64::MAX),
            final_seen: AtomicU64::new(0),
            primed: AtomicBool::new(false),
            primed_told: Notify::new(),
            epoch: Instant::now(),
            publishers: (0..publishers)
                .map(|_| Publisher {
                    counts: (0..RING).map(|_| AtomicU64::new(0)).collect(),
                    wait_seq: AtomicU64::new(u64::MAX),
                    wake: Notify::new(),
                })
                .collect(),
            sent: AtomicU64::new(0),
            by_node: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn delivered(&self, publisher: usize, seq: u64) {
        let Some(p) = self.publishers.get(publisher) else {
            return;
        };
        let n = p.counts[seq as usize % RING].fetch_add(1, Relaxed) + 1;
        if seq == p.wait_seq.load(Relaxed) && n >= self.open.load(Relaxed) {
            p.wake.notify_one();
        }
    }

    fn left(&self) {
        self.open.fetch_sub(1, Relaxed);
        for p in &self.publishers {
            p.wake.notify_one();
        }
    }

    fn prime(&self) {
        self.primed.store(true, Relaxed);
        self.primed_told.notify_one();
    }
}

/// What every task of the workload shares.
#[derive(Debug, Clone)]
struct Shared {
    protocol: Protocol,
    room_name: Arc<str>,
    room: Arc<Room>,
    totals: Arc<Totals>,
    window: Arc<OnceCell<Window>>,
    stop: Arc<AtomicBool>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Answers what the server says outside the chat: pings get their pong; a refusal ends
    /// the connection with its reason. Returns the chat text, if the frame is one.
    async fn answer<'m>(
        &self,
        ws: &mut WebSocket<MaybeTlsStream>,
        msg: Option<duplex::Result<Message>>,
        text: &'m mut Option<duplex::Utf8Bytes>,
    ) -> anyhow::Result<Option<&'m str>> {
        let frame = match msg {
            Some(Ok(Message::Text(frame))) => text.insert(frame),
            Some(Ok(Message::Close(frame))) => bail!("the server closed the connection: {frame:?}"),
            Some(Ok(_)) => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the server ended the connection"),
        };
        match self.protocol.parse(frame.as_str()) {
            Incoming::Chat(chat) => Ok(Some(chat)),
            Incoming::Ping => {
                ws.send(Message::text(self.protocol.pong())).await?;
                Ok(None)
            }
            Incoming::Refused(why) => bail!("refused: {why}"),
            Incoming::Open(_) | Incoming::Connected | Incoming::Other => Ok(None),
        }
    }
}

/// Connects to `url`, opens the protocol's session and joins the room as `name`.
async fn enter(
    shared: &Shared,
    url: &str,
    config: duplex::Config,
    name: &str,
) -> anyhow::Result<WebSocket<MaybeTlsStream>> {
    let mut builder = ClientBuilder::new(url)?.config(config);
    if let Some(sub) = shared.protocol.subprotocol() {
        builder = builder.protocol(sub);
    }
    let (mut ws, _) = builder.connect().await?;
    if shared.protocol.has_session_handshake() {
        let handshake = async {
            let mut opened = false;
            loop {
                let Some(frame) = ws.recv().await else {
                    bail!("the server ended the connection during the Socket.IO handshake");
                };
                let Message::Text(frame) = frame? else {
                    continue;
                };
                match shared.protocol.parse(frame.as_str()) {
                    Incoming::Open(_) if !opened => {
                        opened = true;
                        ws.send(Message::text(shared.protocol.connect())).await?;
                    }
                    Incoming::Connected if opened => return Ok(()),
                    Incoming::Ping => ws.send(Message::text(shared.protocol.pong())).await?,
                    Incoming::Refused(why) => bail!("Socket.IO refused the session: {why}"),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(SESSION_TIMEOUT, handshake)
            .await
            .context("no Socket.IO open and connect packets within 30 s")??;
    }
    let join = shared.protocol.join(&shared.room_name, name);
    ws.send(Message::text(join)).await?;
    Ok(ws)
}

/// A subscriber: enters the room on `url`, then measures each delivery's latency from its
/// stamp until the window is over.
async fn subscribe(
    shared: Shared,
    url: String,
    node: usize,
    index: usize,
    config: duplex::Config,
    limit: Arc<Semaphore>,
) -> Latencies {
    let room = shared.room.clone();
    let permit = limit.acquire_owned().await;
    let entered = enter(&shared, &url, config, &format!("s{index}")).await;
    drop(permit);
    let mut ws = match entered {
        Ok(ws) => ws,
        Err(e) => {
            shared.totals.connect_errors.fetch_add(1, Relaxed);
            shared.totals.note(format!("connect to {url}: {e:#}"));
            room.settled.fetch_add(1, Relaxed);
            return histogram();
        }
    };
    room.open.fetch_add(1, Relaxed);
    room.settled.fetch_add(1, Relaxed);
    let mut hist = histogram();
    let mut joined = false;
    let mut frame = None;
    let why = loop {
        let window = shared.window.get();
        let over = window.map(|w| w.end + Duration::from_millis(200));
        if over.is_some_and(|t| Instant::now() > t) || shared.stopped() {
            break None;
        }
        // Until the window is known, look up every 100 ms; then wait until it ends.
        let until = over.unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
        let msg = match tokio::time::timeout_at(until.into(), ws.recv()).await {
            Err(_) => continue,
            Ok(msg) => msg,
        };
        let now = Instant::now();
        let chat = match shared.answer(&mut ws, msg, &mut frame).await {
            Ok(Some(chat)) => chat,
            Ok(None) => continue,
            Err(e) => {
                let when = match window {
                    None => "before the warm-up",
                    Some(w) if now < w.start => "in the warm-up",
                    Some(w) if now <= w.end => "in the window",
                    Some(_) => "after the window",
                };
                break Some(format!("subscriber on {url}, {when}: {e:#}"));
            }
        };
        // Another client's message in the room: not ours to measure.
        let Some(stamp) = Stamp::parse(chat) else {
            continue;
        };
        if !joined {
            joined = true;
            room.joined.fetch_add(1, Relaxed);
        }
        if stamp.seq == 0 {
            if stamp.stamp == room.final_probe.load(Relaxed) {
                room.final_seen.fetch_add(1, Relaxed);
            }
            continue;
        }
        room.delivered(stamp.publisher, stamp.seq);
        shared.totals.seen.fetch_add(1, Relaxed);
        let Some(window) = window else { continue };
        if window.contains(now) {
            shared.totals.messages.fetch_add(1, Relaxed);
            shared.totals.bytes.fetch_add(chat.len() as u64, Relaxed);
            if let Some(n) = room.by_node.get(node) {
                n.fetch_add(1, Relaxed);
            }
            let at = room.epoch + Duration::from_nanos(stamp.stamp);
            if at >= window.start {
                record(&mut hist, now.saturating_duration_since(at));
            }
        }
    };
    room.left();
    match why {
        Some(why) => shared.totals.error(why),
        None => close(ws).await,
    }
    hist
}

/// Reads (and answers) what the server sends until `done()` holds or `deadline` passes,
/// looking at `done()` at least every 10 ms.
async fn read_until(
    shared: &Shared,
    ws: &mut WebSocket<MaybeTlsStream>,
    deadline: Instant,
    done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let mut frame = None;
    while !done() && Instant::now() < deadline && !shared.stopped() {
        let tick = (Instant::now() + Duration::from_millis(10)).min(deadline);
        if let Ok(msg) = tokio::time::timeout_at(tick.into(), ws.recv()).await {
            shared.answer(ws, msg, &mut frame).await?;
        }
    }
    Ok(())
}

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
struct Publishing {
    index: usize,
    size: usize,
    in_flight: u64,
    /// Seconds between two messages of this publisher (0: only the window holds it back).
    interval: f64,
}

/// A publisher: enters the room on the first node, sends the probes if it is the first one,
/// then stamped messages until the window ends.
async fn publish(
    shared: Shared,
    url: String,
    config: duplex::Config,
    what: Publishing,
    subscribers: u64,
) -> anyhow::Result<Latencies> {
    let room = shared.room.clone();
    let mut ws = enter(&shared, &url, config, &format!("p{}", what.index))
        .await
        .with_context(|| format!("publisher {} cannot join on {url}", what.index))?;
    room.publishing.fetch_add(1, Relaxed);
    let far = Instant::now() + Duration::from_secs(3600);
    read_until(&shared, &mut ws, far, || {
        room.settled.load(Relaxed) >= subscribers
    })
    .await?;
    if what.index == 0 {
        prime(&shared, &mut ws).await?;
    } else {
        read_until(&shared, &mut ws, far, || room.primed.load(Relaxed)).await?;
    }
    read_until(&shared, &mut ws, far, || shared.window.get().is_some()).await?;
    let window = shared.window.get().context("no measurement window")?;
    let me = room
        .publishers
        .get(what.index)
        .context("a publisher beyond the count")?;
    let in_flight = what.in_flight.clamp(1, RING as u64 / 2);
    let began = Instant::now();
    let mut frame = None;
    let mut seq: u64 = 0;
    while Instant::now() < window.end && !shared.stopped() {
        if seq >= in_flight {
            // Message `seq + 1` goes next: wait for `seq + 1 - in_flight` (seqs start at 1).
            let wait = seq + 1 - in_flight;
            me.wait_seq.store(wait, Relaxed);
            let slot = &me.counts[wait as usize % RING];
            // A subscriber that missed a message (it joined late, or was dropped) would hold
            // the publisher forever: after 1 s the publisher moves on.
            let give_up = (Instant::now() + Duration::from_secs(1)).min(window.end);
            while slot.load(Relaxed) < room.open.load(Relaxed) && Instant::now() < give_up {
                tokio::select! {
                    msg = ws.recv() => {
                        shared.answer(&mut ws, msg, &mut frame).await?;
                    }
                    () = me.wake.notified() => {}
                    () = tokio::time::sleep_until(give_up.into()) => {}
                }
            }
        }
        if what.interval > 0.0 {
            let next = began + Duration::from_secs_f64(what.interval * seq as f64);
            let next = next.min(window.end);
            if next > Instant::now() {
                read_until(&shared, &mut ws, next, || false).await?;
            }
        }
        if Instant::now() >= window.end {
            break;
        }
        seq += 1;
        me.counts[seq as usize % RING].store(0, Relaxed);
        let stamp = room.epoch.elapsed().as_nanos() as u64;
        let text = Stamp {
            publisher: what.index,
            seq,
            stamp,
        }
        .text(what.size);
        let at = Instant::now();
        ws.send(Message::text(
            shared.protocol.send(&shared.room_name, &text),
        ))
        .await
        .with_context(|| format!("publisher {}", what.index))?;
        if window.contains(at) {
            room.sent.fetch_add(1, Relaxed);
        }
    }
    close(ws).await;
    Ok(histogram())
}

/// The first publisher's probes (sequence number 0): one every 500 ms until every subscriber
/// has received one, then a last one that every subscriber must receive. Messages arrive in
/// order, so the probes' backlog is then delivered, and the measured messages do not queue
/// behind it.
async fn prime(shared: &Shared, ws: &mut WebSocket<MaybeTlsStream>) -> anyhow::Result<()> {
    let room = &shared.room;
    let deadline = Instant::now() + PRIMING;
    let mut probe = 0u64;
    let everyone = || room.open.load(Relaxed);
    while room.joined.load(Relaxed) < everyone() && Instant::now() < deadline {
        probe += 1;
        let text = Stamp {
            publisher: 0,
            seq: 0,
            stamp: probe,
        }
        .text(0);
        ws.send(Message::text(
            shared.protocol.send(&shared.room_name, &text),
        ))
        .await?;
        let next = Instant::now() + Duration::from_millis(500);
        read_until(shared, ws, next, || room.joined.load(Relaxed) >= everyone()).await?;
    }
    probe += 1;
    room.final_probe.store(probe, Relaxed);
    let text = Stamp {
        publisher: 0,
        seq: 0,
        stamp: probe,
    }
    .text(0);
    ws.send(Message::text(
        shared.protocol.send(&shared.room_name, &text),
    ))
    .await?;
    read_until(shared, ws, deadline, || {
        room.final_seen.load(Relaxed) >= everyone()
    })
    .await?;
    if room.final_seen.load(Relaxed) < everyone() {
        shared.totals.error(format!(
            "only {} of {} subscribers received anything within {} s",
            room.joined.load(Relaxed),
            everyone(),
            PRIMING.as_secs()
        ));
    }
    room.prime();
    Ok(())
}

/// The nodes of a comma list of URLs, as the protocol connects to them.
pub(super) fn endpoints(list: &str, protocol: Protocol) -> anyhow::Result<Vec<String>> {
    let nodes: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let url = url::Url::parse(s).with_context(|| format!("bad URL {s}"))?;
            Ok(protocol.endpoint(&url))
        })
        .collect::<anyhow::Result<_>>()?;
    if nodes.is_empty() {
        bail!("--crossnode needs at least one node URL (a comma list)");
    }
    Ok(nodes)
}

/// Runs the cross-node workload and prints its report.
pub(super) async fn run_crossnode(
    args: &BenchArgs,
    config: duplex::Config,
    totals: &Arc<Totals>,
) -> anyhow::Result<()> {
    let protocol = args.protocol;
    let nodes = endpoints(&args.url, protocol)?;
    let publishers = args.publishers.max(1);
    let subscribers = args.connections;
    let shared = Shared {
        protocol,
        room_name: args.room.as_str().into(),
        room: Arc::new(Room::new(publishers, nodes.len())),
        totals: totals.clone(),
        window: Arc::new(OnceCell::new()),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let room = shared.room.clone();
    let connect_started = Instant::now();

    let interval = if args.rate > 0.0 {
        publishers as f64 / args.rate
    } else {
        0.0
    };
    let mut pubs = Vec::with_capacity(publishers);
    for index in 0..publishers {
        let what = Publishing {
            index,
            size: args.size,
            in_flight: args.in_flight as u64,
            interval,
        };
        let task = publish(
            shared.clone(),
            nodes[0].clone(),
            config,
            what,
            subscribers as u64,
        );
        pubs.push(tokio::spawn(task));
    }
    // The publishers are in the room first, so that they read the subscribers' arrivals.
    let deadline = Instant::now() + Duration::from_secs(30);
    while room.publishing.load(Relaxed) < publishers as u64 {
        if pubs.iter().any(|p| p.is_finished()) || Instant::now() > deadline {
            shared.stop.store(true, Relaxed);
            for p in pubs {
                if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(1), p).await {
                    return Err(e);
                }
            }
            bail!("the publishers could not join on {}", nodes[0]);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let limit = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut subs = Vec::with_capacity(subscribers);
    for index in 0..subscribers {
        let node = index % nodes.len();
        let task = subscribe(
            shared.clone(),
            nodes[node].clone(),
            node,
            index,
            config,
            limit.clone(),
        );
        subs.push(tokio::spawn(task));
    }
    while room.settled.load(Relaxed) < subscribers as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connected_in = connect_started.elapsed();
    if room.open.load(Relaxed) == 0 {
        shared.stop.store(true, Relaxed);
        let why = totals
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        bail!("no subscriber could join: {why}");
    }
    // Subscribers are in the room only once their node processed their join and their node's
    // share of the room reaches them: the warm-up starts when every one received a probe.
    while !room.primed.load(Relaxed) {
        if pubs.first().is_none_or(|p| p.is_finished()) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), room.primed_told.notified()).await;
    }
    let start = Instant::now() + args.warmup;
    let end = start + args.duration;
    let _ = shared.window.set(Window { start, end });

    let cpu = super::watch(args, totals, start, end).await;
    shared.stop.store(true, Relaxed);
    let cpu = cpu?;

    let mut latencies = histogram();
    for task in subs {
        // Every task ends by itself shortly after the window (its close is bounded).
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(hist)) => latencies.add(&hist).context("merging histograms")?,
            Ok(Err(e)) => totals.error(format!("task failed: {e}")),
            Err(_) => totals.error("a connection did not finish within 10 s"),
        }
    }
    for task in pubs {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => totals.error(format!("{e:#}")),
            Ok(Err(e)) => totals.error(format!("publisher task failed: {e}")),
            Err(_) => totals.error("a publisher did not finish within 10 s"),
        }
    }

    let failed = totals.connect_errors.load(Relaxed);
    let mut report = Summary {
        mode: super::plans::Mode::Crossnode,
        args,
        connect_failed: failed,
        connected_in,
        latencies: &latencies,
        totals,
        server_cpu: cpu.as_ref().map(|each| each.iter().sum()),
    }
    .to_json();
    let secs = args.duration.as_secs_f64();
    let sent = room.sent.load(Relaxed);
    let extra = serde_json::json!({
        "protocol": protocol.name(),
        "nodes": nodes,
        "room": args.room,
        "publishers": publishers,
        "rate": args.rate,
        "sent": sent,
        "sent_per_sec": sent as f64 / secs,
        "deliveries_by_node": room.by_node.iter().map(|n| n.load(Relaxed)).collect::<Vec<_>>(),
        "server_pids": args.server_pid,
        "server_cpu_secs_each": cpu,
    });
    if let (Some(report), serde_json::Value::Object(extra)) = (report.as_object_mut(), extra) {
        report.extend(extra);
    }
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(())
}

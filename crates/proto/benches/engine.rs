//! Throughput of the engine's hot paths: masking, frame headers, receiving small messages,
//! UTF-8 validation and permessage-deflate.
//!
//! `cargo bench -p duplex-proto` (add `-- mask` etc. to run one group). Figures are per core:
//! every benchmark runs on one thread.

use std::hint::black_box;

use bytes::{Buf, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duplex_proto::deflate::codec::{Deflater, Inflater};
use duplex_proto::deflate::DeflateParams;
use duplex_proto::frame::{FrameHeader, OpCode};
use duplex_proto::mask::{apply_mask, apply_mask_at};
use duplex_proto::utf8::Utf8Validator;
use duplex_proto::{Connection, Message, Role};

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [16usize, 64, 256, 1024, 4096, 16 << 10, 64 << 10, 1 << 20] {
        let mut buf = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box([0x37, 0xfa, 0x21, 0x3d])))
        });
    }
    // A payload that starts at an odd address and key phase, as a frame's bytes do in a read
    // buffer.
    let mut buf = vec![0x5au8; (64 << 10) + 3];
    group.throughput(Throughput::Bytes(64 << 10));
    group.bench_function("65536-unaligned", |b| {
        b.iter(|| {
            apply_mask_at(
                black_box(&mut buf[3..]),
                black_box([0x37, 0xfa, 0x21, 0x3d]),
                1,
            )
        })
    });
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("7bit-masked", 20u64, true),
        ("16bit", 16 << 10, false),
        ("64bit-masked", 1 << 20, true),
    ];
    for (name, len, masked) in cases {
        let mut head = FrameHeader::new(OpCode::Binary, len);
        if masked {
            head.mask = Some([1, 2, 3, 4]);
        }
        let wire = head.encode();
        let wire = wire.as_slice().to_vec();
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| FrameHeader::parse(black_box(&wire)))
        });
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| black_box(&head).encode())
        });
    }
    group.finish();
}

/// `count` masked frames of `size` bytes, as a server receives them from a client.
fn client_wire(count: usize, size: usize, binary: bool) -> Vec<u8> {
    let mut client = Connection::new(Role::Client, Default::default());
    let payload: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    for _ in 0..count {
        let msg = if binary {
            Message::binary(payload.clone().into_bytes())
        } else {
            Message::text(payload.as_str())
        };
        client.send(msg).expect("open connection");
    }
    let q = client.send_queue();
    q.copy_to_bytes(q.remaining()).to_vec()
}

fn receive(c: &mut Criterion) {
    let mut group = c.benchmark_group("receive");
    const COUNT: usize = 1000;
    for (name, size, binary) in [("text-20B", 20, false), ("binary-1KiB", 1024, true)] {
        let wire = client_wire(COUNT, size, binary);
        let mut server = Connection::new(Role::Server, Default::default());
        let mut buf = BytesMut::with_capacity(wire.len());
        // Messages per second; each iteration also copies the wire bytes into the read
        // buffer, as a socket read would.
        group.throughput(Throughput::Elements(COUNT as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(&wire);
                let mut n = 0;
                while let Ok(Some(msg)) = server.receive(&mut buf) {
                    black_box(&msg);
                    n += 1;
                }
                assert_eq!(n, COUNT);
            })
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let ascii: Vec<u8> = (0..64 << 10).map(|i| b' ' + (i % 90) as u8).collect();
    let sample = "Hello, κόσμε! Grüße, 世界 — ok 🎉 ";
    let mixed: Vec<u8> = sample.bytes().cycle().take(64 << 10).collect();
    // The longest valid prefix of at most `len` bytes (cut at a code point boundary).
    let valid = |len: usize| {
        let end = (0..=len)
            .rev()
            .find(|&i| std::str::from_utf8(&mixed[..i]).is_ok())
            .unwrap_or(0);
        &mixed[..end]
    };
    // Large messages, then small ones (where the per-call cost dominates).
    let inputs = [
        ("ascii-64KiB", &ascii[..]),
        ("mixed-64KiB", valid(mixed.len())),
        ("ascii-20B", &ascii[..20]),
        ("ascii-1KiB", &ascii[..1024]),
        ("mixed-1KiB", valid(1024)),
    ];
    for (name, data) in inputs {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut v = Utf8Validator::default();
                v.feed(black_box(data)).expect("valid UTF-8");
                v.is_complete()
            })
        });
    }
    group.finish();
}

/// Chat messages as the hub sends them: JSON objects with a few fields.
fn chat_json(i: usize) -> Vec<u8> {
    format!(
        r#"{{"type":"message","room":"general","seq":{},"from":"user-{}","time":{},"text":"message number {} about the release planned for next week, see the notes"}}"#,
        1000 + i,
        i % 17,
        1_760_000_000_000u64 + i as u64 * 37,
        i
    )
    .into_bytes()
}

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    let messages: Vec<Vec<u8>> = (0..100).map(chat_json).collect();
    let total: usize = messages.iter().map(Vec::len).sum();
    for (name, reset) in [("context-takeover", false), ("no-context-takeover", true)] {
        let params = DeflateParams {
            compress_window_bits: 12,
            compress_reset: reset,
            decompress_window_bits: 12,
            decompress_reset: reset,
            level: 1,
            threshold: 32,
        };
        group.throughput(Throughput::Bytes(total as u64));
        let mut deflater = Deflater::new(&params);
        group.bench_function(BenchmarkId::new("compress", name), |b| {
            b.iter(|| {
                for m in &messages {
                    black_box(deflater.compress(m).expect("compress"));
                }
            })
        });
        // Compress one stream of the 100 messages, then time decompressing all of them (a
        // fresh inflater each round, since the messages share one context).
        let mut d = Deflater::new(&params);
        let packed: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| d.compress(m).expect("compress"))
            .collect();
        group.bench_function(BenchmarkId::new("decompress", name), |b| {
            let mut out = Vec::with_capacity(1024);
            b.iter(|| {
                let mut inflater = Inflater::new(&params);
                for p in &packed {
                    out.clear();
                    inflater.inflate(p, &mut out, 1 << 20).expect("inflate");
                    inflater.finish(&mut out, 1 << 20).expect("inflate");
                    black_box(&out);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, masking, headers, receive, utf8, deflate);
criterion_main!(benches);

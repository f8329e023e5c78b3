//! `cargo fuzz run handshake_request`: see `duplex_fuzz::handshake_request` for the input format and the invariants.
#![no_main]

#[global_allocator]
static ALLOC: duplex_fuzz::CountingAlloc = duplex_fuzz::CountingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::handshake_request(data));

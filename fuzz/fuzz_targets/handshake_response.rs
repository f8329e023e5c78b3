//! `cargo fuzz run handshake_response`: see `duplex_fuzz::handshake_response` for the input format and the invariants.
#![no_main]

#[global_allocator]
static ALLOC: duplex_fuzz::CountingAlloc = duplex_fuzz::CountingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::handshake_response(data));

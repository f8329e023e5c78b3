//! `cargo fuzz run frame`: see `duplex_fuzz::frame` for the input format and the invariants.
#![no_main]

#[global_allocator]
static ALLOC: duplex_fuzz::CountingAlloc = duplex_fuzz::CountingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::frame(data));

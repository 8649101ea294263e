//! Any bytes as a B+tree meta page.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv::btree::fuzz_meta(data));

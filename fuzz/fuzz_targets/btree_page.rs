//! Any bytes as every kind of B+tree page.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv::btree::fuzz_page(data));

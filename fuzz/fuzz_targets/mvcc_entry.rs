//! Any bytes as a DiskStore tree key, version value and checkpoint blob.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    corekv::mvcc::disk::fuzz_tree_key(data);
    corekv::mvcc::disk::fuzz_value(data);
    corekv::mvcc::disk::fuzz_blob(data);
});

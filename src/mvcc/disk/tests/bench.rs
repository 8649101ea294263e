//! A microbenchmark of `DiskStore` against `MemStore` (ignored by default):
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-disk cargo test --lib mvcc::disk::tests::bench -- --ignored --nocapture
//! ```
//!
//! `BENCH_KEYS` sets the key count (default 200,000). Built with the dev
//! profile (opt-level 1): compare the two stores, not absolute numbers.

use std::ops::ControlFlow;
use std::time::Instant;

use super::util::{Rng, TempDir};
use crate::mvcc::disk::DiskStore;
use crate::mvcc::{End, MemStore, MvccStore, Rev};

fn key(i: u64) -> Vec<u8> {
    format!("/registry/pods/ns-{:02}/pod-{i:08}", i % 50).into_bytes()
}

/// Runs `f` `n` times; returns operations per second.
fn rate(n: u64, mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

struct Row {
    name: &'static str,
    mem: f64,
    disk: f64,
}

fn workload(store: &mut dyn MvccStore, keys: u64, rows: &mut Vec<(&'static str, f64)>) {
    let value = vec![7u8; 200];
    let mut rng = Rng::new(1);
    let mut rev = 1;
    rows.push((
        "put (new keys)",
        rate(keys, |i| {
            rev += 1;
            store.put(&key((i * 7919) % keys), &value, 0, Rev { main: rev, sub: 0 });
        }),
    ));
    rows.push((
        "put (overwrite)",
        rate(keys / 2, |_| {
            rev += 1;
            store.put(&key(rng.below(keys)), &value, 0, Rev { main: rev, sub: 0 });
        }),
    ));
    let mut found = 0u64;
    rows.push((
        "latest (random)",
        rate(keys, |_| {
            found += u64::from(store.latest(&key(rng.below(keys))).is_some());
        }),
    ));
    assert_eq!(found, keys);
    let mut scanned = 0u64;
    let scans = 2000;
    let per_scan = rate(scans, |_| {
        let start = key(rng.below(keys));
        let mut n = 0;
        store.scan(&start, End::Unbounded, i64::MAX, &mut |_| {
            n += 1;
            if n == 100 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        scanned += n;
    });
    rows.push(("scan 100 keys (keys/s)", per_scan * scanned as f64 / scans as f64));
    let at = rev / 2;
    let per_scan = rate(scans, |_| {
        let start = key(rng.below(keys));
        let mut n = 0;
        store.scan(&start, End::Unbounded, at, &mut |_| {
            n += 1;
            if n == 100 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
    });
    rows.push(("scan 100 at an old rev (scans/s)", per_scan));
    let counts = 20;
    let per_count = rate(counts, |_| {
        assert_eq!(store.count(b"", End::Unbounded, i64::MAX), keys);
    });
    rows.push(("count all (keys/s)", per_count * keys as f64));
}

#[test]
#[ignore]
fn bench_disk_store_against_mem_store() {
    let keys: u64 = std::env::var("BENCH_KEYS").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let dir = TempDir::new("bench");
    let mut mem_rows = Vec::new();
    workload(&mut MemStore::new(), keys, &mut mem_rows);
    for (label, cache_bytes) in [("cache 256 MiB", 256usize << 20), ("cache 4 MiB", 4 << 20)] {
        let path = dir.path(&format!("bench-{cache_bytes}.db"));
        let (mut disk, _) = DiskStore::open_path(&path, cache_bytes).unwrap();
        let mut disk_rows = Vec::new();
        workload(&mut disk, keys, &mut disk_rows);
        let start = Instant::now();
        let dirty = disk.dirty_pages();
        disk.checkpoint_sync(1, b"").unwrap();
        let checkpoint = start.elapsed();
        let rows: Vec<Row> =
            mem_rows.iter().zip(&disk_rows).map(|(m, d)| Row { name: m.0, mem: m.1, disk: d.1 }).collect();
        println!("\n{keys} keys of ~35 bytes, 200-byte values; DiskStore with {label}");
        println!("| operation | MemStore ops/s | DiskStore ops/s | ratio |");
        println!("|---|---:|---:|---:|");
        for r in &rows {
            println!("| {} | {:.0} | {:.0} | {:.2} |", r.name, r.mem, r.disk, r.disk / r.mem);
        }
        let stats = disk.cache_stats();
        println!(
            "checkpoint of {dirty} dirty pages: {:.1} ms; file {} pages ({:.1} MiB); size_bytes {:.1} MiB; \
             cache {:?}",
            checkpoint.as_secs_f64() * 1e3,
            disk.file_pages(),
            disk.file_pages() as f64 * 4096.0 / (1 << 20) as f64,
            disk.size_bytes() as f64 / (1 << 20) as f64,
            stats,
        );
        // Reads after a reopen, from a cold cache.
        drop(disk);
        let (disk, _) = DiskStore::open_path(&path, cache_bytes).unwrap();
        let mut rng = Rng::new(2);
        let cold = rate(keys / 4, |_| {
            disk.latest(&key(rng.below(keys)));
        });
        let stats = disk.cache_stats();
        println!("latest after reopen (cold cache): {cold:.0} ops/s, {} sync misses", stats.sync_misses);
    }
}

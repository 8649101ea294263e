//! Durability through the real binary and the real WAL files.
//!
//! - SIGKILL at a random point while 16 writers put unique keys: after a
//!   restart every acknowledged put is there with exactly its acknowledged
//!   revision and value, nothing unacknowledged appears from nowhere, the
//!   revisions have no holes, and numbering continues. Five rounds on one
//!   data directory.
//! - A torn tail (the last write cut mid-record, as a crash during a write
//!   leaves it) is truncated at restart; everything before the cut stays.
//! - A damaged record followed by intact ones is corruption: the server
//!   refuses to start and names the WAL file and the offset.
//!
//! The WAL format is in src/wal/mod.rs's top comment: segments
//! `{seq:016x}.wal`, records from offset 4096, each `length` (u32 LE, 0 =
//! nothing written) then CRC, kind (1 entry, 2 hard state, 3 write end),
//! ..., payload at +48, padded to 8 bytes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Rng, Server};
use etcd_client::{Client, GetOptions};

const ROUNDS: usize = 5;
const WRITERS: usize = 16;
/// Puts per writer per round, and the time bound of a round's writes.
const PUTS_PER_WRITER: usize = 250;
const ROUND_TIME_MAX: Duration = Duration::from_secs(3);

/// Every key under `prefix` as key → (value, create, mod, version).
async fn dump(c: &mut Client, prefix: &str) -> (i64, BTreeMap<String, (String, i64, i64, i64)>) {
    let r = c.get(prefix, Some(GetOptions::new().with_prefix())).await.expect("dump");
    let map = r
        .kvs()
        .iter()
        .map(|kv| {
            let k = String::from_utf8_lossy(kv.key()).into_owned();
            let v = String::from_utf8_lossy(kv.value()).into_owned();
            (k, (v, kv.create_revision(), kv.mod_revision(), kv.version()))
        })
        .collect();
    (r.header().expect("header").revision(), map)
}

#[derive(Default)]
struct Log {
    /// key → value of every put sent.
    attempted: BTreeMap<String, String>,
    /// key → (value, revision) of every put acknowledged.
    acked: BTreeMap<String, (String, i64)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_puts_survive_sigkill_with_their_revisions_over_five_rounds() {
    crash_rounds("crash_rounds", &["--cores", "2"]).await;
}

/// The same with a snapshot every 20 entries: kills land before, during
/// and after snapshots, and restarts start from the newest one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_puts_survive_sigkill_with_snapshots_every_few_entries() {
    let s = crash_rounds("crash_snap", &["--cores", "2", "--snapshot-count", "20"]).await;
    let log = s.stderr();
    assert!(log.contains("recovered from a snapshot"), "the last start did not use a snapshot:\n{log}");
}

async fn crash_rounds(name: &str, flags: &[&str]) -> Server {
    let (mut rng, seed) = Rng::from_env(77);
    let mut s = Server::corekv(name, flags);
    let log = Arc::new(Mutex::new(Log::default()));
    let mut killed_mid_write = 0;
    for round in 0..ROUNDS {
        let client = s.client().await;
        let kill_after = Duration::from_millis(rng.range_i64(20, 1000) as u64);
        let deadline = Instant::now() + ROUND_TIME_MAX;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (mut kv, log) = (client.kv_client(), log.clone());
            writers.push(tokio::spawn(async move {
                let mut failed = false;
                for i in 0..PUTS_PER_WRITER {
                    if Instant::now() > deadline {
                        break;
                    }
                    let key = format!("crash/{round}/{w:02}/{i:04}");
                    let value = format!("{seed}:{round}:{w}:{i}");
                    log.lock().unwrap().attempted.insert(key.clone(), value.clone());
                    match kv.put(key.clone(), value.clone(), None).await {
                        Ok(r) => {
                            let rev = r.header().expect("header").revision();
                            log.lock().unwrap().acked.insert(key, (value, rev));
                        }
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                failed
            }));
        }
        tokio::time::sleep(kill_after).await;
        s.kill();
        let mut any_failed = false;
        for w in writers {
            any_failed |= w.await.expect("writer");
        }
        killed_mid_write += usize::from(any_failed);
        drop(client);
        s.restart();
        let mut c = s.client().await;
        let (rev, present) = dump(&mut c, "crash/").await;
        // A copy: the lock is not held across the awaits below.
        let l = {
            let g = log.lock().unwrap();
            Log { attempted: g.attempted.clone(), acked: g.acked.clone() }
        };
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} acknowledged, {} attempted, {} present, revision {rev}",
            l.acked.len(),
            l.attempted.len(),
            present.len()
        );
        for (k, (v, r)) in &l.acked {
            let got =
                present.get(k).unwrap_or_else(|| panic!("round {round}: acknowledged {k} (revision {r}) is lost"));
            assert_eq!(got, &(v.clone(), *r, *r, 1), "round {round}: {k} differs from its acknowledged put");
        }
        for (k, (v, ..)) in &present {
            assert_eq!(l.attempted.get(k), Some(v), "round {round}: {k} was never written with this value");
        }
        // Every revision is one put of a unique key: the revisions present
        // are exactly 2..=rev, so no durable put went missing.
        let revs: BTreeSet<i64> = present.values().map(|p| p.2).collect();
        assert_eq!(revs.len(), present.len(), "round {round}: two keys share a revision");
        assert_eq!(revs.iter().copied().collect::<Vec<_>>(), (2..=rev).collect::<Vec<_>>(), "round {round}: holes");
        let max_acked = l.acked.values().map(|a| a.1).max().unwrap_or(1);
        // A new put continues the numbering; it stays, as a key like the
        // others, so the hole check of the next round still holds.
        let (key, value) = (format!("crash/probe/{round}"), format!("probe {round}"));
        log.lock().unwrap().attempted.insert(key.clone(), value.clone());
        let p = c.put(key.clone(), value.clone(), None).await.expect("put after restart");
        let next = p.header().unwrap().revision();
        assert!(next > max_acked, "round {round}: new put got {next}, not above the acknowledged {max_acked}");
        assert_eq!(next, rev + 1, "round {round}: new put after revision {rev}");
        log.lock().unwrap().acked.insert(key, (value, next));
    }
    assert!(killed_mid_write > 0, "no round was killed while puts were in flight");
    s
}

// ------------------------------------------------------------ WAL files

const RECORDS_START: usize = 4096;
const KIND_ENTRY: u8 = 1;
const KIND_WRITE_END: u8 = 3;

/// One record of a segment, as the format describes it.
#[derive(Clone, Debug)]
struct Rec {
    offset: usize,
    /// The `length` field: header and payload, without padding.
    len: usize,
    kind: u8,
}

impl Rec {
    fn end(&self) -> usize {
        self.offset + self.len.div_ceil(8) * 8
    }
}

/// The records of a segment, up to the first zero length.
fn records(seg: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut off = RECORDS_START;
    while off + 48 <= seg.len() {
        let len = u32::from_le_bytes(seg[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        assert!(len >= 48 && off + len <= seg.len(), "record at {off} has length {len}");
        let rec = Rec { offset: off, len, kind: seg[off + 8] };
        off = rec.end();
        out.push(rec);
    }
    out
}

/// The segment files of `dir`, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read WAL dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    segs
}

/// The last segment holding records (later ones are preallocated spares
/// whose header is still all zero), with its bytes and records.
fn last_written_segment(wal: &Path) -> (PathBuf, Vec<u8>, Vec<Rec>) {
    for path in segments(wal).into_iter().rev() {
        let bytes = std::fs::read(&path).expect("read segment");
        if bytes.starts_with(b"corekvWL") {
            let recs = records(&bytes);
            assert!(!recs.is_empty(), "{} has a header but no records", path.display());
            // Zero-filled beyond the data: the end of written data is where
            // the records stop.
            let end = recs.last().unwrap().end();
            assert!(bytes[end..].iter().take(1 << 20).all(|&b| b == 0), "data after the last record");
            return (path, bytes, recs);
        }
    }
    panic!("no written segment in {}", wal.display());
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const WAL_KEYS: usize = 40;

fn wal_key(i: usize) -> String {
    format!("wal-test/key-{i:03}")
}

fn wal_value(i: usize) -> String {
    format!("value-{i:03}-of-a-clean-write")
}

/// Starts a server, puts `WAL_KEYS` keys one at a time (one WAL write
/// each), SIGKILLs it and returns it with the acknowledged revisions.
async fn clean_writes_then_sigkill(name: &str) -> (Server, Vec<i64>) {
    let mut s = Server::corekv(name, &["--cores", "2"]);
    let mut c = s.client().await;
    let mut revs = Vec::new();
    for i in 0..WAL_KEYS {
        let p = c.put(wal_key(i), wal_value(i), None).await.expect("put");
        revs.push(p.header().unwrap().revision());
    }
    drop(c);
    s.kill();
    (s, revs)
}

/// After a restart: keys `0..n` are there with their acknowledged
/// revisions, the rest are not, and the next put continues from the last
/// key kept.
async fn assert_kept_first(s: &Server, revs: &[i64], n: usize) {
    let mut c = s.client().await;
    let (rev, present) = dump(&mut c, "wal-test/").await;
    let want: BTreeMap<String, (String, i64, i64, i64)> =
        (0..n).map(|i| (wal_key(i), (wal_value(i), revs[i], revs[i], 1))).collect();
    assert_eq!(present, want, "the keys after restart");
    assert_eq!(rev, revs[n - 1], "the revision after restart");
    let p = c.put("wal-test/after", "x", None).await.expect("put after restart");
    assert_eq!(p.header().unwrap().revision(), revs[n - 1] + 1);
}

#[tokio::test]
async fn torn_write_inside_the_last_entry_is_truncated_and_everything_before_it_kept() {
    let (mut s, revs) = clean_writes_then_sigkill("wal_torn_entry").await;
    let wal = s.data_dir.join("member").join("wal");
    let (path, mut bytes, recs) = last_written_segment(&wal);
    let last_entry = recs.iter().rev().find(|r| r.kind == KIND_ENTRY).expect("an entry record").clone();
    let last_key = wal_key(WAL_KEYS - 1);
    let payload = &bytes[last_entry.offset + 48..last_entry.offset + last_entry.len];
    assert!(contains(payload, last_key.as_bytes()), "the last entry holds the last put");
    assert!(!contains(payload, wal_key(WAL_KEYS - 2).as_bytes()));
    // Cut mid-record: zero from the middle of the last entry to the end of
    // the data, as a write torn at a sector boundary leaves it.
    let cut = last_entry.offset + last_entry.len / 2;
    let end = recs.last().unwrap().end();
    bytes[cut..end].fill(0);
    std::fs::write(&path, &bytes).expect("write segment");
    s.restart();
    assert!(s.stderr().contains("torn"), "no word about the torn tail:\n{}", s.stderr());
    assert_kept_first(&s, &revs, WAL_KEYS - 1).await;
    // And the repaired log restarts again to the same state plus the put.
    s.restart();
    let mut c = s.client().await;
    let (rev, present) = dump(&mut c, "wal-test/").await;
    assert_eq!((rev, present.len()), (revs[WAL_KEYS - 2] + 1, WAL_KEYS));
}

#[tokio::test]
async fn torn_write_end_record_keeps_the_complete_records_of_the_last_write() {
    let (mut s, revs) = clean_writes_then_sigkill("wal_torn_write_end").await;
    let wal = s.data_dir.join("member").join("wal");
    let (path, mut bytes, recs) = last_written_segment(&wal);
    let last = recs.last().unwrap().clone();
    assert_eq!(last.kind, KIND_WRITE_END, "every write ends with a write-end record");
    // Tear the write-end record only: the entry before it is complete.
    let cut = last.offset + last.len / 2;
    bytes[cut..last.end()].fill(0);
    std::fs::write(&path, &bytes).expect("write segment");
    s.restart();
    assert_kept_first(&s, &revs, WAL_KEYS).await;
}

#[tokio::test]
async fn corrupt_record_before_intact_ones_stops_the_server_naming_file_and_offset() {
    let (mut s, _) = clean_writes_then_sigkill("wal_corrupt_middle").await;
    let wal = s.data_dir.join("member").join("wal");
    let (path, mut bytes, recs) = last_written_segment(&wal);
    let entries: Vec<&Rec> = recs.iter().filter(|r| r.kind == KIND_ENTRY).collect();
    assert!(entries.len() >= WAL_KEYS, "one entry per put");
    // Flip a byte in the payload of an early entry (the fourth put).
    let victim = entries
        .iter()
        .find(|r| contains(&bytes[r.offset + 48..r.offset + r.len], wal_key(3).as_bytes()))
        .expect("the entry of the fourth put")
        .offset;
    let victim_rec = recs.iter().find(|r| r.offset == victim).unwrap().clone();
    let at = victim + 48 + (victim_rec.len - 48) / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, &bytes).expect("write segment");
    let before = std::fs::read(&path).unwrap();
    for attempt in 0..2 {
        let f = s.launch_expecting_failure();
        assert!(!f.status.success(), "attempt {attempt}: exit status {}", f.status);
        let file = path.display().to_string();
        assert!(f.stderr.contains(&file), "attempt {attempt}: stderr does not name {file}:\n{}", f.stderr);
        let offset: usize = f
            .stderr
            .split("offset")
            .nth(1)
            .and_then(|rest| {
                let digits: String = rest
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
            .unwrap_or_else(|| panic!("attempt {attempt}: stderr gives no offset:\n{}", f.stderr));
        assert!(
            (victim_rec.offset..victim_rec.end()).contains(&offset),
            "attempt {attempt}: offset {offset} is not in the damaged record {victim_rec:?}:\n{}",
            f.stderr
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "attempt {attempt}: the refused start changed the segment");
    }
}

/// Overwrites of a few keys with compaction: snapshots cover the log, so
/// WAL segments are released and the data directory stops growing; a
/// SIGKILL afterwards restarts from the snapshot with every key intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wal_segments_are_released_once_snapshots_cover_them() {
    let mut s = Server::corekv("wal_release", &["--cores", "2", "--snapshot-count", "200"]);
    let mut c = s.client().await;
    let value = "v".repeat(60 << 10);
    let wal = s.data_dir.join("member").join("wal");
    let mut most_segments = 0;
    let mut last = BTreeMap::new();
    // 3,000 puts of 60 KiB: about 176 MiB of log, 3 segments' worth.
    for i in 0..3000usize {
        let key = format!("ow/{:02}", i % 50);
        let v = format!("{i}:{value}");
        let rev = c.put(key.clone(), v.clone(), None).await.expect("put").header().expect("header").revision();
        last.insert(key, (v, rev));
        if i % 250 == 249 {
            c.compact(rev, None).await.expect("compact");
            most_segments = most_segments.max(segments(&wal).len());
        }
    }
    let log = s.stderr();
    assert!(
        log.contains("released WAL segments"),
        "no segment was released:\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
    // Three segments' worth written; never more than two live and a spare.
    assert!(most_segments <= 3, "up to {most_segments} segments at once");
    s.restart();
    let mut c = s.client().await;
    let (_, present) = dump(&mut c, "ow/").await;
    assert_eq!(present.len(), last.len());
    for (k, (v, rev)) in &last {
        let got = present.get(k).expect("key kept");
        assert_eq!((&got.0, got.2), (v, *rev), "{k}");
    }
    assert!(s.stderr().contains("recovered from a snapshot"));
}

//! `corekv hw-check`: measures a WAL device with the WAL itself.
//!
//! Runs the real [`Wal`] (O_DIRECT, preallocated segments, one write and one
//! fdatasync per flush) in a scratch directory on the device and reports
//! what matters for corekv: the latency of a one-record flush (every
//! acknowledged write waits for one; etcd's bar is a p99 fdatasync under
//! 10 ms), what group commit reaches (64 records of 1 KiB per flush), and
//! O_DIRECT bandwidth with 1 MiB records. Owns nothing the server uses.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::types::{MemberId, RaftIndex, Term};
use crate::wal::{EntryKind, EntryRef, HardState, Wal, WalError, WalOptions};

/// etcd's recommendation for the WAL device: p99 fdatasync under this.
const ETCD_P99_BAR: Duration = Duration::from_millis(10);
/// How long each measurement runs at most.
const PHASE_TIME_MAX: Duration = Duration::from_secs(5);
/// How many flushes each measurement does at most.
const PHASE_FLUSHES_MAX: usize = 2000;

struct Phase {
    name: &'static str,
    records_per_flush: usize,
    record_bytes: usize,
}

const PHASES: [Phase; 3] = [
    Phase { name: "one 256 B record per flush (an idle server's write)", records_per_flush: 1, record_bytes: 256 },
    Phase { name: "64 records of 1 KiB per flush (group commit)", records_per_flush: 64, record_bytes: 1024 },
    Phase { name: "one 1 MiB record per flush (bandwidth)", records_per_flush: 1, record_bytes: 1 << 20 },
];

/// Runs the check in a scratch directory under `dir`; prints a report.
/// Returns whether the device meets etcd's bar.
pub fn run(dir: &Path) -> Result<bool, WalError> {
    let scratch = dir.join(format!("corekv-hw-check-{}", std::process::id()));
    let result = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .map_err(|source| WalError::Io { op: "start io_uring", file: PathBuf::from(dir), offset: 0, source })?
        .block_on(measure(&scratch));
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn measure(scratch: &Path) -> Result<bool, WalError> {
    std::fs::create_dir_all(scratch).map_err(|source| WalError::Io {
        op: "create directory",
        file: scratch.to_path_buf(),
        offset: 0,
        source,
    })?;
    let (mut wal, _) = Wal::open(scratch, WalOptions::default())?;
    // Let the first spare segment finish preparing before timing anything.
    monoio::time::sleep(Duration::from_millis(500)).await;
    println!("corekv hw-check: WAL in {} (O_DIRECT, fdatasync per flush)", scratch.display());
    let mut meets = true;
    for phase in &PHASES {
        let lat = run_phase(&mut wal, phase).await?;
        meets &= report(phase, &lat, phase.records_per_flush == 1 && phase.record_bytes < 4096);
    }
    Ok(meets)
}

async fn run_phase(wal: &mut Wal, phase: &Phase) -> Result<Vec<Duration>, WalError> {
    let payload = vec![0x5au8; phase.record_bytes];
    let mut lat = Vec::with_capacity(PHASE_FLUSHES_MAX);
    let start = Instant::now();
    while lat.len() < PHASE_FLUSHES_MAX && start.elapsed() < PHASE_TIME_MAX {
        let first = wal.last_index().get() + 1;
        let batch: Vec<EntryRef<'_>> = (first..first + phase.records_per_flush as u64)
            .map(|i| EntryRef { index: RaftIndex(i), term: Term(1), kind: EntryKind::Normal, data: &payload })
            .collect();
        let hs = HardState { term: Term(1), vote: MemberId(1), commit: RaftIndex(first) };
        let t = Instant::now();
        wal.append(&batch, Some(hs))?;
        wal.flush().await?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// Prints one phase; for the latency phase, returns whether p99 meets
/// etcd's bar (other phases always "meet").
fn report(phase: &Phase, lat: &[Duration], judged: bool) -> bool {
    let mut sorted = lat.to_vec();
    sorted.sort();
    let total: Duration = sorted.iter().sum();
    let pct = |p: usize| sorted.get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1))).copied();
    let (p50, p99, max) = (pct(50).unwrap_or_default(), pct(99).unwrap_or_default(), pct(100).unwrap_or_default());
    let secs = total.as_secs_f64().max(1e-9);
    let records = (sorted.len() * phase.records_per_flush) as f64;
    let mib = records * phase.record_bytes as f64 / (1 << 20) as f64;
    println!("\n{}", phase.name);
    println!("  flushes {}  p50 {:?}  p99 {:?}  max {:?}", sorted.len(), p50, p99, max);
    println!("  {:.0} flushes/s  {:.0} records/s  {:.1} MiB/s", sorted.len() as f64 / secs, records / secs, mib / secs);
    if !judged {
        return true;
    }
    let ok = p99 < ETCD_P99_BAR;
    println!(
        "  etcd's bar (p99 fdatasync < {:?}): {}",
        ETCD_P99_BAR,
        if ok { "met" } else { "NOT met: expect slow writes and leader elections under load" }
    );
    ok
}

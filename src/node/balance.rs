//! The balancer: keeps the shards' key counts close by moving split points
//! of the range map between neighbouring shards.
//!
//! Kubernetes keys (`/registry/<resource>/<namespace>/<name>`) crowd into a
//! few prefixes, so no fixed split fits them. Every interval the balancer
//! (on the sequencer's reactor) looks at the shards' live key counts, takes
//! the neighbouring pair that differs most, and moves their split point so
//! that part of the difference changes hands. The new map travels in the
//! stream of committed entries, so every shard switches at the same point
//! of the log; results never depend on the map (DESIGN §4).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::handle::NodeHandle;
use super::msg::Msg;
use crate::types::ShardId;

/// How often the balancer looks.
const INTERVAL: Duration = Duration::from_millis(250);
/// Below this many keys per shard on average, balance does not matter.
const KEYS_PER_SHARD_MIN: u64 = 512;
/// Most keys one move hands over (bounds the pause of the two shards).
const MOVE_KEYS_MAX: u64 = 50_000;

/// The neighbouring pair to even out, as (split index, keys to move, donor
/// is the lower shard), if the counts are uneven enough to bother.
pub fn plan(counts: &[u64]) -> Option<(usize, u64, bool)> {
    let n = counts.len() as u64;
    let total: u64 = counts.iter().sum();
    if n < 2 || total < KEYS_PER_SHARD_MIN * n {
        return None;
    }
    let mean = total / n;
    let (i, diff) = counts.windows(2).enumerate().map(|(i, w)| (i, w[0].abs_diff(w[1]))).max_by_key(|&(_, d)| d)?;
    // Even out only a difference above a quarter of the mean: small
    // swings come and go with the load.
    if diff <= mean / 4 {
        return None;
    }
    let moved = (diff / 2).clamp(1, MOVE_KEYS_MAX);
    Some((i, moved, counts[i] > counts[i + 1]))
}

/// Runs the balancer forever.
pub async fn run(node: NodeHandle) {
    loop {
        monoio::time::sleep(INTERVAL).await;
        let stats = &node.shared().stats;
        let map = node.map();
        // One move at a time: wait until every shard holds the current map.
        if stats.map_versions.iter().any(|v| v.load(Ordering::Relaxed) != map.version()) {
            continue;
        }
        let counts: Vec<u64> = stats.keys.iter().map(|k| k.load(Ordering::Relaxed)).collect();
        let Some((i, moved, lower_gives)) = plan(&counts) else { continue };
        // The lower shard gives its top `moved` keys: the new split is its
        // `moved`-th key from the top. The upper shard gives its bottom
        // `moved` keys: the new split is the first key it keeps.
        let key = if lower_gives {
            node.split_key(ShardId(i as u16), moved - 1, true).await
        } else {
            node.split_key(ShardId(i as u16 + 1), moved, false).await
        };
        let Some(next) = key.and_then(|k| map.with_split(i, k)) else { continue };
        crate::log_info!(
            "moving a shard boundary",
            "from" => map.version(),
            "to" => next.version(),
            "split" => i,
            "keys" => moved,
            "counts" => format!("{counts:?}")
        );
        let next = Arc::new(next);
        node.broadcast(|| Msg::Remap(next.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_or_small_stores_stay_put() {
        assert_eq!(plan(&[100, 0]), None);
        assert_eq!(plan(&[5000, 4800, 5100]), None);
    }

    #[test]
    fn the_most_uneven_pair_moves_half_its_difference() {
        assert_eq!(plan(&[10_000, 0]), Some((0, 5000, true)));
        assert_eq!(plan(&[1000, 1000, 9000]), Some((1, 4000, false)));
        assert_eq!(plan(&[0, 1_000_000]), Some((0, MOVE_KEYS_MAX, false)));
    }
}

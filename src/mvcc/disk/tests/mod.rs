//! Tests of `DiskStore`: model-based against `MemStore` (model.rs), a small
//! cache, injected I/O errors (fault.rs), corruption on disk (corrupt.rs),
//! crashes during a checkpoint (crash.rs), prefetching (prefetch.rs) and a
//! microbenchmark (bench.rs, ignored). Random tests print the failing seed;
//! replay one with `DISK_SEED=<seed>`, run more with `DISK_SEEDS=<count>`.

mod bench;
mod corrupt;
mod crash;
mod fault;
mod fuzz;
mod model;
mod prefetch;
mod util;

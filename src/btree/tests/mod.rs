//! Tests of the B+tree: model-based, crash consistency, injected faults,
//! misses, corruption and the fuzz entry points. Random tests print the
//! failing seed; replay one with `BTREE_SEED=<seed>`, run more with
//! `BTREE_SEEDS=<count>` (and longer ones with `BTREE_OPS=<ops>`).

mod corrupt;
mod crash;
mod fault;
mod fuzz;
mod miss;
mod model;
mod util;

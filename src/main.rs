//! The `corekv` server binary: etcd's command line, then the node.

use std::process::ExitCode;

use corekv::config::{self, Parsed};
use corekv::{log, log_error};

/// Per-thread heaps suit one thread per core; glibc's malloc spent a fifth
/// of a put's time in its own bookkeeping (flamegraphs/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's `void mi_collect(bool force)`, from the library linked in
    /// as the global allocator above.
    fn mi_collect(force: bool);
}

/// Gives the calling thread's free mimalloc pages back to the OS.
fn release_free_memory() {
    // SAFETY: mi_collect takes a plain bool and has no preconditions: it
    // walks the calling thread's mimalloc heap, which exists on every thread
    // (mimalloc initialises it on first use), and frees only unused pages.
    unsafe { mi_collect(true) }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hw-check") {
        return hw_check(&args[1..]);
    }
    let parsed = config::parse(args, std::env::vars());
    let config = match parsed {
        Ok(Parsed::Run(c)) => c,
        Ok(Parsed::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("corekv Version: {}", env!("CARGO_PKG_VERSION"));
            println!("etcd API Version: {}", corekv::api::SERVER_VERSION);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("corekv: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = log::init(config.log_level, &config.log_outputs) {
        eprintln!("corekv: {e}");
        return ExitCode::from(2);
    }
    config.log_notices();
    let _ = corekv::node::RELEASE_FREE_MEMORY.set(release_free_memory);
    match corekv::node::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log_error!("corekv could not start", "error" => e.to_string());
            ExitCode::from(1)
        }
    }
}

/// `corekv hw-check [DIR]`: measures the device holding DIR (default: the
/// current directory) with the WAL's own write pattern.
fn hw_check(args: &[String]) -> ExitCode {
    let dir = std::path::PathBuf::from(args.first().map_or(".", String::as_str));
    match corekv::hwcheck::run(&dir) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("corekv hw-check: {e}");
            ExitCode::from(2)
        }
    }
}

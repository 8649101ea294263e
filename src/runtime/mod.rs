//! Reactors: one pinned OS thread per core, each running a single-threaded
//! io_uring executor (monoio), and the batched channels between them.
//!
//! Owns: thread start-up and pinning, the cross-core [`Mesh`] with its
//! per-reactor [`Outbox`], and small single-thread primitives ([`local`]).
//! Never knows what the messages mean (DESIGN §2).

pub mod local;
mod mesh;

pub use mesh::{Inbox, Mesh, Outbox};

use std::io;
use std::thread::JoinHandle;

use crate::types::ReactorId;

/// io_uring submission queue entries per reactor.
const URING_ENTRIES: u32 = 1024;

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is a plain bit array for which all-zero is a valid
    // (empty) value; `sched_getaffinity` writes at most `size_of::<cpu_set_t>()`
    // bytes into the set we pass with that size, and CPU_ISSET only reads
    // bits below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect();
        if cpus.is_empty() {
            vec![0]
        } else {
            cpus
        }
    }
}

/// Starts `n` reactor threads. Reactor `i` is pinned to the `i`-th allowed
/// CPU (wrapping when there are more reactors than CPUs) and runs
/// `body(ReactorId(i))` to completion on its own monoio runtime.
pub fn start<F, Fut>(n: usize, body: F) -> io::Result<Vec<JoinHandle<()>>>
where
    F: Fn(ReactorId) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let cpus = allowed_cpus();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let cpu = cpus[i % cpus.len()];
        let body = body.clone();
        let handle = std::thread::Builder::new().name(format!("reactor-{i}")).spawn(move || {
            if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
                crate::log_warn!("could not pin reactor to its CPU", "reactor" => i, "cpu" => cpu, "error" => format!("{e:?}"));
            }
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(URING_ENTRIES)
                .enable_timer()
                .build();
            match rt {
                Ok(mut rt) => rt.block_on(body(ReactorId(i as u16))),
                Err(e) => {
                    crate::log_error!("could not start the io_uring runtime", "reactor" => i, "error" => e.to_string());
                    std::process::exit(1);
                }
            }
        })?;
        handles.push(handle);
    }
    Ok(handles)
}

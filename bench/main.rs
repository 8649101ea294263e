//! `corekv-bench`: an etcd v3 load generator speaking gRPC to any
//! etcd-compatible endpoint list, so the same command measures corekv and
//! etcd. Runs one monoio runtime per `--threads`, many client tasks on each,
//! and reports latency percentiles, throughput, errors by gRPC code, its
//! own CPU use and (with `--server-pid`) the server's. `--help` lists the
//! workloads and options; bench/README.md explains the method and
//! bench/compare.sh runs it side by side with etcd.
//!
//! Code map: `args` (command line), `keys` (key space and order),
//! `workload` (request encoding, reply reading), `watch` (watch keys,
//! requests and the delivery check), `lease` (lease requests and replies),
//! `k8s` (kube-apiserver's request shapes, mix, key bookkeeping),
//! `stats` (histograms and errors), `run` (threads, runtimes, phases,
//! clients), `streams` (the watch and lease streams' I/O), `k8s_run` (the
//! k8s workload's I/O), `sys` (getrusage, /proc, machine), `report` (text
//! and JSON), `plot` (SVG). Everything but `run`, `streams`, `k8s_run` and
//! `sys` is sans-IO and unit-tested.

mod args;
#[cfg(test)]
mod e2e;
mod k8s;
mod k8s_run;
mod keys;
mod lease;
mod plot;
mod report;
mod run;
mod stats;
mod streams;
mod sys;
mod watch;
mod workload;

use std::io::IsTerminal;
use std::process::ExitCode;

use args::Command;
use report::Report;
use sys::Machine;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let options = match args::parse(&argv[1..]) {
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(options)) => options,
        Err(error) => {
            eprintln!("corekv-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let command = sys::shell_command(&argv);
    let machine = Machine::read();
    print!("{}", report::header(&command, &machine, &options));
    let show_progress = options.progress.unwrap_or_else(|| std::io::stderr().is_terminal());
    let result = match run::run(&options, show_progress) {
        Ok(result) => result,
        Err(error) => {
            eprintln!("corekv-bench: {error}");
            // Other generator threads may be parked at a barrier: exit now.
            std::process::exit(1);
        }
    };
    let report = Report { command: &command, argv: &argv, machine: &machine, options: &options, result: &result };
    print!("{}", report.text());
    if let Some(path) = &options.json {
        if let Err(error) = std::fs::write(path, report.json().render()) {
            eprintln!("corekv-bench: cannot write --json {}: {error}", path.display());
            return ExitCode::from(1);
        }
    }
    if let Some(prefix) = &options.plot {
        let title = format!("{} on {}", options.workload.name(), options.endpoints.join(","));
        let (latency, throughput) = plot::render(&title, &result.stats, result.elapsed);
        let mut paths = Vec::new();
        for (what, svg) in [("latency", latency), ("throughput", throughput)] {
            let path = format!("{prefix}-{what}.svg");
            if let Err(error) = std::fs::write(&path, svg) {
                eprintln!("corekv-bench: cannot write --plot {path}: {error}");
                return ExitCode::from(1);
            }
            paths.push(path);
        }
        println!("plots      {}", paths.join(", "));
    }
    if result.stats.ok() == 0 {
        eprintln!("corekv-bench: no request succeeded");
        return ExitCode::from(3);
    }
    if let Some(watch) = &result.watch {
        if watch.delivery.errors() + watch.canceled + watch.stream_errors + watch.bad_responses > 0 {
            eprintln!("corekv-bench: watch events were not delivered exactly once (see \"delivery\")");
            return ExitCode::from(4);
        }
    }
    ExitCode::SUCCESS
}

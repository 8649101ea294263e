//! What the generator reads from the operating system: its own CPU time
//! (getrusage), a server's CPU time and peak RSS (/proc/<pid>/stat and
//! status), and the machine's description. The parsers are separate from
//! the reads so they can be tested on fixed text.

use std::io;
use std::ops::Add;
use std::time::Duration;

/// User and system CPU time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    /// User plus system.
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// `self - earlier`, clamped at zero.
    pub fn saturating_sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime { user: self.user.saturating_sub(earlier.user), system: self.system.saturating_sub(earlier.system) }
    }
}

impl Add for CpuTime {
    type Output = CpuTime;
    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime { user: self.user + other.user, system: self.system + other.system }
    }
}

fn rusage(who: libc::c_int) -> CpuTime {
    // SAFETY: getrusage writes a plain struct we own; zeroed is a valid start.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(who, &mut usage) };
    assert_eq!(rc, 0, "getrusage({who}) failed: {}", io::Error::last_os_error());
    let time = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    CpuTime { user: time(usage.ru_utime), system: time(usage.ru_stime) }
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> CpuTime {
    rusage(libc::RUSAGE_THREAD)
}

/// CPU time of this whole process.
pub fn self_cpu() -> CpuTime {
    rusage(libc::RUSAGE_SELF)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// utime + stime of process `pid`, from /proc/<pid>/stat.
pub fn process_cpu(pid: i32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: unexpected format")))?;
    let hz = clock_ticks_per_second();
    Ok(Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz))
}

/// utime + stime (fields 14 and 15, in clock ticks) of a /proc stat line.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size (VmHWM) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: i32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, "VmHWM")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/status: no VmHWM")))
}

/// Resident set size (VmRSS) of process `pid` now, in KiB.
pub fn rss_kib(pid: i32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, "VmRSS")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/status: no VmRSS")))
}

/// A `Name:   1234 kB` line of /proc/<pid>/status or /proc/meminfo.
pub fn parse_status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The machine a run happened on, for the report's header.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_kib: u64,
    /// 1, 5 and 15 minute load averages when the run started.
    pub load_average: String,
    pub hostname: String,
}

impl Machine {
    /// Reads the machine's description; missing facts stay empty.
    pub fn read() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_default();
        let loadavg = read("/proc/loadavg");
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            mem_total_kib: parse_status_kib(&read("/proc/meminfo"), "MemTotal").unwrap_or(0),
            load_average: loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        }
    }
}

/// The command line as a shell would need it typed to run it again.
pub fn shell_command(args: &[String]) -> String {
    args.iter().map(|arg| shell_quote(arg)).collect::<Vec<_>>().join(" ")
}

fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_utime_plus_stime_even_with_odd_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 3000 0 0 0 250 75 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_lines_give_kib() {
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 50000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(51234));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn our_own_usage_is_readable() {
        let pid = std::process::id() as i32;
        assert!(process_cpu(pid).is_ok());
        assert!(peak_rss_kib(pid).unwrap() > 0);
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(rss_kib(pid).unwrap() <= peak_rss_kib(pid).unwrap());
        let before = thread_cpu();
        let mut x = 0u64;
        for i in 0..10_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(thread_cpu().total() >= before.total());
        assert!(self_cpu().total() >= thread_cpu().total());
    }

    #[test]
    fn command_lines_are_quoted_for_the_shell() {
        let args = ["corekv-bench", "--prefix", "/a b/", "it's", "--limit=3"].map(String::from);
        assert_eq!(shell_command(&args), r"corekv-bench --prefix '/a b/' 'it'\''s' --limit=3");
    }
}

//! etcdctl compatibility suite: runs `tests/etcdctl/compat.sh` (etcd 3.4's
//! etcdctl against a fresh corekv) and fails with the script's output if any
//! check differs from what etcd 3.4 prints.
//!
//! Needs `etcdctl` 3.4 on PATH (Debian: `apt-get install etcd-client`) and
//! python3. Set `COREKV_ETCDCTL` to use another etcdctl binary.

use std::path::Path;
use std::process::Command;

#[test]
fn etcdctl_compat() {
    let etcdctl = std::env::var("COREKV_ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
    let version = Command::new(&etcdctl).arg("version").output();
    match version {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`{etcdctl} version` failed ({}): {}{}\n\
             Install etcd's client with `apt-get install etcd-client` (Debian's etcdctl 3.4).",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        ),
        Err(e) => panic!(
            "etcdctl is not installed ({etcdctl}: {e}); this test needs it.\n\
             Install it with `apt-get install etcd-client` (Debian's etcdctl 3.4)."
        ),
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/etcdctl/compat.sh");
    // The data dir must be on a real file system (O_DIRECT WAL), not tmpfs:
    // cargo's per-test scratch dir lives in the target dir.
    let tmp = env!("CARGO_TARGET_TMPDIR");
    std::fs::create_dir_all(tmp).expect("create CARGO_TARGET_TMPDIR");
    let out = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_corekv"))
        .env("COREKV_ETCDCTL", &etcdctl)
        .env("COREKV_COMPAT_TMPDIR", tmp)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed ({}):\n{stdout}{stderr}", script.display(), out.status);
}

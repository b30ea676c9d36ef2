//! A cgroup v2 subtree per unit, where one is delegated to vigil: every process of the unit
//! starts in `{vigil's cgroup}/vigil-{tag}/{unit}` and stays there whatever it does (clear its
//! environment, `setsid`, double-fork), so a stop finds them all and ends with `cgroup.kill`.
//! Where no cgroup v2 hierarchy is writable (cgroup v1 hosts, unprivileged containers) units
//! run as before: found through their session, process group, environment marker and the
//! subreaper. The cgroup adds to that search; it never replaces it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// vigil's own cgroup v2 directory when it can create children in it (delegated, or root).
pub fn delegated() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER`
    let mount = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })?;
    let dir = mount.join(own.trim_start_matches('/'));
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: access with a valid C string and a mode.
    let writable = unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0;
    (writable && dir.join("cgroup.procs").exists()).then_some(dir)
}

/// The unit's cgroup under `root` (made if missing): `root/vigil-{tag}/{unit}`, `tag` telling
/// apart daemons with different data directories on one host.
pub fn for_unit(root: &Path, tag: &str, unit: &str) -> std::io::Result<PathBuf> {
    let dir = root.join(format!("vigil-{tag}")).join(unit);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A short tag of the data directory (8 hex digits of its SHA-256).
pub fn tag(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    h[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The pids now in the cgroup.
pub fn members(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILL to every process in the cgroup at once (kernel 5.14 and later); false when the
/// kernel has no `cgroup.kill`.
pub fn kill(cgroup: &Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"))
        .is_ok()
}

/// What the child runs between fork and exec to enter its cgroup: the path of `cgroup.procs`
/// as a C string, made before the fork (nothing may allocate after it).
pub fn procs_path(cgroup: &Path) -> Option<std::ffi::CString> {
    std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_encoded_bytes()).ok()
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs` (writing "0"
/// moves the writer). Only async-signal-safe calls: it runs in a forked child. Failing is not
/// fatal: the unit then runs where vigil runs and is found the other ways.
///
/// # Safety
/// Call only in a forked child before exec (or in any thread: it only makes syscalls).
pub unsafe fn enter(procs: &std::ffi::CStr) {
    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd >= 0 {
        libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
    }
}

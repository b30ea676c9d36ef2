//! What an idle `vigil run` keeps resident (benches/idle.rs). Most of an idle daemon's resident
//! memory is not data but code: the binary's mapped text that start-up touched (config parsing,
//! regex compilation, SQLite migrations, clap) stays resident although nothing runs it again.
//! Two measures, both for the daemon process only:
//!
//! - [`limit_arenas`]: glibc gives each thread that contends on the allocator an arena of its
//!   own (up to 8 per core), each keeping its freed memory; two are plenty for a daemon whose
//!   heavy work is a few blocking store calls.
//! - [`release_startup_pages`]: once start-up is over, give back the freed heap and unmap the
//!   clean pages of read-only file mappings (the binary's and the libraries' code and constant
//!   data). They stay in the page cache: whatever the idle daemon runs again is mapped back on
//!   its first use by a minor fault, so what remains resident is what idling actually uses.

/// Caps glibc's malloc arenas at two. Call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns freed heap to the kernel and unmaps start-up's code pages (see the module doc).
/// Returns the kB of mappings released, for the log. Only mappings that were never written
/// are touched: no `w` permission, no anonymous or dirty pages (the relocated, then
/// read-only, GOT and `.data.rel.ro` are dirty and must keep their contents).
pub fn release_startup_pages() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for m in clean_file_mappings(&smaps) {
        // SAFETY: the range is a private file mapping that holds no written pages (checked
        // above from smaps, and it is not writable, so none can have appeared since):
        // MADV_DONTNEED drops its page-table entries and the next access maps the same bytes
        // back from the file.
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += m.rss_kb;
        }
    }
    released
}

/// One mapping from `/proc/self/smaps` that may be released.
#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    len: usize,
    rss_kb: u64,
}

/// The read-only, private, file-backed mappings with resident pages and none written.
fn clean_file_mappings(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    // The current mapping's header, if it is a candidate, and what smaps said about it so far.
    let mut cur: Option<(Mapping, bool)> = None;
    let mut finish = |cur: &mut Option<(Mapping, bool)>| {
        if let Some((m, clean)) = cur.take() {
            if clean && m.rss_kb > 0 {
                out.push(m);
            }
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                finish(&mut cur);
                let perms = f.next().unwrap_or("");
                let _offset = f.next();
                let _dev = f.next();
                let inode = f.next().unwrap_or("0");
                let path = f.next().unwrap_or("");
                let candidate = perms.len() == 4
                    && !perms.contains('w')
                    && perms.ends_with('p')
                    && perms.starts_with('r')
                    && inode != "0"
                    && path.starts_with('/');
                if candidate {
                    cur = Some((
                        Mapping {
                            start: lo,
                            len: hi - lo,
                            rss_kb: 0,
                        },
                        true,
                    ));
                }
                continue;
            }
        }
        let Some((m, clean)) = cur.as_mut() else {
            continue;
        };
        let kb = || {
            f.clone()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Rss:" => m.rss_kb = kb(),
            "Private_Dirty:" | "Shared_Dirty:" | "Anonymous:" | "Swap:" if kb() > 0 => {
                *clean = false
            }
            _ => {}
        }
    }
    finish(&mut cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55dbc08bf000-55dbc0b18000 r--p 00000000 08:01 123 /usr/bin/vigil
Rss:                1156 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55dbc0b18000-55dbc12ed000 r-xp 00259000 08:01 123 /usr/bin/vigil
Rss:                7060 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55dbc12ed000-55dbc1334000 r--p 00a2e000 08:01 123 /usr/bin/vigil
Rss:                 284 kB
Private_Dirty:       280 kB
Anonymous:           280 kB
55dbc1334000-55dbc1336000 rw-p 00a75000 08:01 123 /usr/bin/vigil
Rss:                   8 kB
Private_Dirty:         8 kB
55dbde68b000-55dbde717000 rw-p 00000000 00:00 0 [heap]
Rss:                 488 kB
7f6dc8e26000-7f6dc8f7c000 r-xp 00026000 08:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1000 kB
Private_Dirty:         0 kB
7ffef5d00000-7ffef5d02000 r-xp 00000000 00:00 0 [vdso]
Rss:                   8 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_released() {
        let got = clean_file_mappings(SMAPS);
        let starts: Vec<usize> = got.iter().map(|m| m.start).collect();
        assert_eq!(
            starts,
            [0x55dbc08bf000, 0x55dbc0b18000, 0x7f6dc8e26000],
            "the binary's constants and code and libc's code; not the relocated RELRO, \
             the data, the heap or the vDSO"
        );
        assert_eq!(got[1].len, 0x55dbc12ed000 - 0x55dbc0b18000);
        assert_eq!(got[1].rss_kb, 7060);
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        // Code and constants unmapped under a running test binary come back on use.
        assert!(
            release_startup_pages() > 0,
            "the test binary's code was resident"
        );
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        assert!(format!("{:?}", std::path::Path::new("/x")).contains('x'));
    }
}

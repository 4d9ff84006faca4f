//! Gives back the code pages that only startup needed.
//!
//! When the process touches a page of code, the kernel maps the 64 KiB
//! around it too (fault-around), so after startup (flag parsing, the
//! Kubernetes client, the TLS setup) nearly all of the binary's text stays
//! resident though an idle replica runs a few hundred KiB of it. Once
//! settled, and then every few minutes, the daemon unmaps its clean,
//! file-backed, read-only mappings with `MADV_DONTNEED`: what it runs again
//! faults back in from the page cache (minor faults, no I/O), the rest stops
//! counting in its resident set. The kernel may drop these pages at any time
//! under memory pressure anyway; this only does it early. Numbers in
//! docs/performance.md.

use std::time::Duration;

use tracing::{debug, warn};

/// From start to the first release: startup is done by then.
pub const FIRST: Duration = Duration::from_secs(10);
/// Between two releases: code a state change or a rare request faulted in
/// (a failover, a scrape) is given back after at most this long.
pub const EVERY: Duration = Duration::from_secs(300);

/// A mapping that may be dropped, with what it has resident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub len: usize,
    pub resident_kib: u64,
    pub path: String,
}

/// The mappings of a `/proc/PID/smaps` text that may be dropped without
/// losing anything: private, not writable, backed by a file, and holding no
/// private copy of a page (`Anonymous: 0 kB`; a relocated read-only section
/// or a debugger's breakpoint has one, and dropping it would revert it).
pub fn droppable(smaps: &str) -> Vec<Mapping> {
    let mut found = Vec::new();
    let mut current: Option<(Mapping, bool)> = None;
    let mut flush = |entry: Option<(Mapping, bool)>| {
        if let Some((m, true)) = entry
            && m.resident_kib > 0
        {
            found.push(m);
        }
    };
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            flush(current.take());
            current = Some(header);
            continue;
        }
        let Some((mapping, eligible)) = current.as_mut() else {
            continue;
        };
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kib = || {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        };
        match key {
            "Rss" => mapping.resident_kib = kib().unwrap_or(0),
            "Anonymous" if kib() != Some(0) => *eligible = false,
            _ => {}
        }
    }
    flush(current);
    found
}

/// A mapping's first line (`start-end perms offset dev inode path`), with
/// whether its address range and permissions make it a candidate.
fn mapping_header(line: &str) -> Option<(Mapping, bool)> {
    let mut fields = line.splitn(6, ' ');
    let (range, perms) = (fields.next()?, fields.next()?);
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let (_offset, _dev, _inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or("").trim_start().to_string();
    let perms = perms.as_bytes();
    if perms.len() != 4 || end <= start {
        return None;
    }
    let eligible =
        perms[0] == b'r' && perms[1] == b'-' && perms[3] == b'p' && path.starts_with('/');
    Some((
        Mapping {
            start,
            len: end - start,
            resident_kib: 0,
            path,
        },
        eligible,
    ))
}

/// Drops this process's [`droppable`] mappings; returns the KiB they had
/// resident.
pub fn release() -> std::io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for m in droppable(&smaps) {
        // SAFETY: the range is a whole mapping of this process that is
        // private, read-only, file-backed and holds no private page, so its
        // content is the file's: MADV_DONTNEED only unmaps pages that the
        // next access reads back from the page cache, as after the kernel
        // reclaimed them. No Rust object lives in such a mapping.
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += m.resident_kib;
            continue;
        }
        let error = std::io::Error::last_os_error();
        // ENOMEM: no longer mapped since smaps was read (nothing to drop).
        if error.raw_os_error() != Some(libc::ENOMEM) {
            return Err(error);
        }
    }
    Ok(released)
}

/// Releases after [`FIRST`], then every [`EVERY`], until the runtime ends.
pub async fn release_periodically() {
    let mut wait = FIRST;
    loop {
        tokio::time::sleep(wait).await;
        wait = EVERY;
        // Reading smaps walks the page tables: off the runtime's threads.
        match tokio::task::spawn_blocking(release).await {
            Ok(Ok(kib)) => debug!(released_kib = kib, "code pages released"),
            Ok(Err(e)) => {
                warn!(error = %e, "cannot release code pages; keeping them");
                return;
            }
            Err(e) => {
                warn!(error = %e, "code page release failed; keeping them");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 1234                       /usr/bin/election
Size:               1024 kB
Rss:                 532 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
55d0c0100000-55d0c0600000 r-xp 00100000 08:01 1234                       /usr/bin/election
Size:               5120 kB
Rss:                4604 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
55d0c0600000-55d0c0648000 r--p 00600000 08:01 1234                       /usr/bin/election
Size:                288 kB
Rss:                 288 kB
Anonymous:           288 kB
VmFlags: rd mr mw me ac
55d0c0648000-55d0c0650000 rw-p 00648000 08:01 1234                       /usr/bin/election
Size:                 32 kB
Rss:                  32 kB
Anonymous:            32 kB
55d0c1000000-55d0c10a4000 rw-p 00000000 00:00 0                          [heap]
Rss:                 548 kB
Anonymous:           548 kB
7f0000000000-7f0000010000 r-xp 00000000 08:01 99                         /opt/my lib/libx.so
Rss:                   0 kB
Anonymous:             0 kB
7f0000010000-7f0000020000 r-xp 00000000 08:01 98                         /usr/lib/libc.so.6
Rss:                  64 kB
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_with_pages_resident_are_droppable() {
        let found = droppable(SMAPS);
        let got: Vec<(usize, usize, u64, &str)> = found
            .iter()
            .map(|m| (m.start, m.len, m.resident_kib, m.path.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x55d0c0000000, 0x100000, 532, "/usr/bin/election"),
                (0x55d0c0100000, 0x500000, 4604, "/usr/bin/election"),
                (0x7f0000010000, 0x10000, 64, "/usr/lib/libc.so.6"),
            ],
            "not the relocated read-only section (a private copy), the \
             writable data, the heap, an empty mapping or the vdso"
        );
    }

    #[test]
    fn a_mapping_with_a_private_page_is_kept_whatever_the_order_of_its_fields() {
        let smaps = "\
1000-3000 r-xp 00000000 08:01 1 /bin/x
Anonymous:             4 kB
Rss:                   8 kB
";
        assert_eq!(droppable(smaps), vec![]);
    }

    #[test]
    fn this_process_releases_its_code_and_goes_on_running_it() {
        let here = droppable as fn(&str) -> Vec<Mapping> as usize;
        let holding_here = |maps: &[Mapping]| {
            maps.iter()
                .find(|m| (m.start..m.start + m.len).contains(&here))
                .cloned()
        };
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let before = holding_here(&droppable(&smaps)).expect("this code's mapping is droppable");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(std::path::Path::new(&before.path), exe);
        assert!(release().unwrap() >= before.resident_kib);
        // and the code runs again, faulted back in from the page cache
        let again = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let after = holding_here(&droppable(&again)).expect("resident again once run");
        assert_eq!((after.start, after.len), (before.start, before.len));
    }
}

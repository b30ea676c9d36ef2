//! The candidate's port: the first of the configured range that nobody listens on, found by
//! binding it (the kernel's answer, not a guess from a list of sockets). The listener is let go
//! at once, so the candidate can take the port; the search is bounded by the range.

use super::config::PortRange;
use std::net::{Ipv4Addr, TcpListener};

/// The first port of `range` that can be bound on every address, or the words a denial shows:
/// `all canary ports busy (9011-9015)`.
pub fn find_free(range: PortRange) -> Result<u16, String> {
    // The wildcard address: a service listening on any address (loopback or another) makes
    // the bind fail, so a port one of them holds is never chosen.
    range
        .iter()
        .find(|p| TcpListener::bind((Ipv4Addr::UNSPECIFIED, *p)).is_ok())
        .ok_or_else(|| format!("all canary ports busy ({range})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three consecutive ports free now, from the kernel's ephemeral choice.
    fn free_range() -> (TcpListener, u16) {
        loop {
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            let p = l.local_addr().unwrap().port();
            if p < 65000
                && TcpListener::bind((Ipv4Addr::UNSPECIFIED, p + 1)).is_ok()
                && TcpListener::bind((Ipv4Addr::UNSPECIFIED, p + 2)).is_ok()
            {
                return (l, p);
            }
        }
    }

    #[test]
    fn the_first_port_nobody_listens_on_and_all_busy_says_so() {
        // The first port held (the listener stays open); the next one is chosen.
        let (held, p) = free_range();
        let range = PortRange {
            first: p,
            last: p + 2,
        };
        assert_eq!(find_free(range), Ok(p + 1));
        // Held on loopback only: still busy for the candidate.
        let also = TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1)).unwrap();
        assert_eq!(find_free(range), Ok(p + 2));
        let last = TcpListener::bind((Ipv4Addr::UNSPECIFIED, p + 2)).unwrap();
        assert_eq!(
            find_free(range),
            Err(format!("all canary ports busy ({}-{})", p, p + 2))
        );
        drop((held, also, last));
    }
}

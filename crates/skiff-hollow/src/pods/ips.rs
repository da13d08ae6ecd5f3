//! Pod IPs of one hollow node: hosts `.1` to `.254` of its fake `/24`.
//!
//! A pod holds its IP while it runs and gives it back when it completes or
//! goes away, so addresses are unique among a node's running pods. The
//! number held is capped at the node's allocatable `pods`, which makes the
//! allocator the node's pod admission too: a pod bound beyond it is
//! rejected, as upstream's kubelet rejects pods over `maxPods`.

use crate::config::MAX_PODS_PER_NODE;

/// The hosts of one node's pod `/24` in use.
#[derive(Debug, Clone)]
pub struct PodIps {
    /// Bit `h` is set when host `h` is in use.
    used: [u64; 4],
    held: u32,
    limit: u32,
}

impl PodIps {
    /// An allocator that hands out at most `limit` hosts at once.
    pub fn new(limit: u32) -> Self {
        Self {
            used: [0; 4],
            held: 0,
            limit: limit.min(MAX_PODS_PER_NODE),
        }
    }

    /// The lowest free host, now in use; `None` when `limit` are in use.
    pub fn allocate(&mut self) -> Option<u8> {
        if self.held >= self.limit {
            return None;
        }
        let host = (1..=u8::try_from(MAX_PODS_PER_NODE).ok()?).find(|h| !self.is_used(*h))?;
        self.mark(host);
        Some(host)
    }

    /// Records `host` as in use (a pod that already had it), even beyond
    /// the limit: the pod runs whatever the limit says.
    pub fn mark(&mut self, host: u8) {
        if !self.is_used(host) {
            self.used[usize::from(host / 64)] |= 1 << (host % 64);
            self.held += 1;
        }
    }

    /// Gives `host` back.
    pub fn release(&mut self, host: u8) {
        if self.is_used(host) {
            self.used[usize::from(host / 64)] &= !(1 << (host % 64));
            self.held -= 1;
        }
    }

    fn is_used(&self, host: u8) -> bool {
        self.used[usize::from(host / 64)] & (1 << (host % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_lowest_free_host_up_to_the_limit() {
        let mut ips = PodIps::new(3);
        assert_eq!(ips.allocate(), Some(1));
        assert_eq!(ips.allocate(), Some(2));
        assert_eq!(ips.allocate(), Some(3));
        assert_eq!(ips.allocate(), None);
        ips.release(2);
        assert_eq!(ips.allocate(), Some(2));
        // Releasing twice frees one slot only.
        ips.release(1);
        ips.release(1);
        assert_eq!(ips.allocate(), Some(1));
        assert_eq!(ips.allocate(), None);
    }

    #[test]
    fn adopted_hosts_count_and_are_skipped() {
        let mut ips = PodIps::new(254);
        ips.mark(1);
        ips.mark(1);
        ips.mark(200);
        assert_eq!(ips.allocate(), Some(2));
        let mut all: Vec<u8> = std::iter::from_fn(|| ips.allocate()).collect();
        all.sort_unstable();
        // 254 hosts minus the three held: .0 and .255 are never handed out.
        assert_eq!(all.len(), 251);
        assert!(!all.contains(&200));
        assert_eq!(all.first(), Some(&3));
        assert_eq!(all.last(), Some(&254));
    }

    #[test]
    fn the_limit_is_at_most_the_subnet() {
        let mut ips = PodIps::new(1000);
        assert_eq!(std::iter::from_fn(|| ips.allocate()).count(), 254);
    }
}

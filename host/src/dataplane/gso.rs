//! Which encrypted packets go out in one UDP GSO send. The kernel splits one send into
//! datagrams of `segment` bytes, the last one possibly shorter; so a run is packets laid end
//! to end in one buffer, all to one endpoint, all of one size but the last. Pure: offsets
//! and lengths in, runs out.

use std::net::SocketAddr;

/// Largest UDP payload of one send, segments together (IPv4's 16-bit total length, less
/// the IP and UDP headers).
pub const MAX_RUN_BYTES: usize = 65_507;

/// Packets `start..end` of the buffer, to `to`, in datagrams of `segment` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub to: SocketAddr,
    pub start: usize,
    pub end: usize,
    pub segment: usize,
    pub count: usize,
}

impl Run {
    /// The segment size to ask the kernel for: none for a single datagram.
    pub fn segment_size(&self) -> Option<usize> {
        (self.count > 1).then_some(self.segment)
    }
}

/// Gathers packets into runs as they are written into one buffer, in order.
#[derive(Debug)]
pub struct Runs {
    /// Most datagrams per send (the socket's GSO limit; 1 without GSO).
    max_segments: usize,
    open: Option<Run>,
    /// The open run's last packet was shorter: nothing may follow it.
    closed: bool,
}

impl Runs {
    pub fn new(max_segments: usize) -> Runs {
        Runs {
            max_segments: max_segments.max(1),
            open: None,
            closed: false,
        }
    }

    /// The packet at `start..start + len` goes to `to`. Returns the run it ended, if it could
    /// not join the open one; that run is ready to send.
    pub fn push(&mut self, to: SocketAddr, start: usize, len: usize) -> Option<Run> {
        if let Some(run) = &mut self.open
            && run.to == to
            && run.end == start
            && !self.closed
            && run.count < self.max_segments
            && len <= run.segment
            && run.end - run.start + len <= MAX_RUN_BYTES
        {
            run.end += len;
            run.count += 1;
            self.closed = len < run.segment;
            return None;
        }
        self.closed = false;
        self.open.replace(Run {
            to,
            start,
            end: start + len,
            segment: len,
            count: 1,
        })
    }

    /// The open run, ready to send; none is left open.
    pub fn finish(&mut self) -> Option<Run> {
        self.closed = false;
        self.open.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    /// Every packet, laid end to end, and the runs made of them.
    fn runs_of(max: usize, packets: &[(u16, usize)]) -> Vec<Run> {
        let mut runs = Runs::new(max);
        let (mut out, mut at) = (Vec::new(), 0);
        for &(port, len) in packets {
            out.extend(runs.push(addr(port), at, len));
            at += len;
        }
        out.extend(runs.finish());
        out
    }

    #[test]
    fn a_split_segment_to_one_peer_goes_out_in_one_send() {
        let packets = [(1, 1452), (1, 1452), (1, 1452), (1, 300)];
        let runs = runs_of(64, &packets);
        assert_eq!(
            runs,
            [Run {
                to: addr(1),
                start: 0,
                end: 3 * 1452 + 300,
                segment: 1452,
                count: 4
            }]
        );
        assert_eq!(runs[0].segment_size(), Some(1452));
    }

    #[test]
    fn a_short_packet_ends_a_run_and_so_do_another_peer_and_a_longer_packet() {
        let runs = runs_of(
            64,
            &[(1, 100), (1, 100), (1, 50), (1, 50), (2, 50), (2, 80)],
        );
        let shapes: Vec<_> = runs.iter().map(|r| (r.to.port(), r.count)).collect();
        assert_eq!(shapes, [(1, 3), (1, 1), (2, 1), (2, 1)]);
        assert_eq!(
            runs[1].segment_size(),
            None,
            "one datagram: no segmentation"
        );
    }

    #[test]
    fn runs_respect_the_socket_limit_and_the_largest_send() {
        let runs = runs_of(4, &[(1, 10); 10]);
        assert_eq!(runs.iter().map(|r| r.count).collect::<Vec<_>>(), [4, 4, 2]);
        let runs = runs_of(64, &[(1, 1452); 64]);
        assert!(runs.iter().all(|r| r.end - r.start <= MAX_RUN_BYTES));
        assert_eq!(runs[0].count, MAX_RUN_BYTES / 1452);
        // Without GSO every packet is its own send.
        assert_eq!(runs_of(1, &[(1, 10); 3]).len(), 3);
    }

    proptest! {
        /// Runs cover every packet once, in order, and each is a send the kernel accepts:
        /// one endpoint, equal segments but a shorter last one, within the limits.
        #[test]
        fn runs_are_valid_gso_sends_covering_every_packet_in_order(
            max in 1usize..70,
            packets in proptest::collection::vec((1u16..4, 1usize..1500), 0..200),
        ) {
            let runs = runs_of(max, &packets);
            let mut at = 0;
            let mut next = 0;
            for run in &runs {
                prop_assert_eq!(run.start, at);
                prop_assert!(run.count >= 1 && run.count <= max);
                prop_assert!(run.count == 1 || run.end - run.start <= MAX_RUN_BYTES);
                let mine = &packets[next..next + run.count];
                prop_assert!(mine.iter().all(|&(p, _)| p == run.to.port()));
                let (last, body) = mine.split_last().unwrap();
                prop_assert!(body.iter().all(|&(_, l)| l == run.segment));
                prop_assert!(last.1 <= run.segment);
                prop_assert_eq!(run.end - run.start, mine.iter().map(|&(_, l)| l).sum::<usize>());
                at = run.end;
                next += run.count;
            }
            prop_assert_eq!(next, packets.len());
        }
    }
}

//! The `probe` import of ping-check plugins: ICMP echoes and TCP connects, a batch at a time,
//! each probe checked by `grants` (inside weft's pools, on a granted port).
//!
//! Refusals are per entry: a bad address or a refused probe is an error in its place, and
//! the rest of the batch still runs. Only a batch past [`MAX_BATCH`] is refused whole, so a
//! plugin cannot make one call hold thousands of sockets.

use super::bindings::imports::weft::plugin::probe;
use super::call::{CallState, Reach};
use super::grants::{self, Ask};
use std::net::IpAddr;
use std::time::Duration;

/// The most probes one call of `icmp-echo` or `tcp-connect` may ask for.
pub const MAX_BATCH: usize = 4096;
/// The longest a probe waits for its answer; a plugin asking for more gets this.
pub const MAX_TIMEOUT_MS: u32 = 5000;

/// What a ping check's probes may reach.
pub struct ProbeReach {
    /// weft's pools when the call began: probes never leave them.
    pub pools: Vec<ipnet::IpNet>,
    /// Where the probes of a batch run, concurrently, while the call blocks its own thread
    /// (see `probe::block_on`).
    pub runtime: tokio::runtime::Handle,
}

type Answer = Result<Option<u32>, String>;

impl CallState {
    /// The reach of a probing call, or why this call may not probe at all.
    fn probe_reach(&self, asked: usize) -> Result<&ProbeReach, String> {
        let Reach::Probe(reach) = &self.reach else {
            // Only `PluginHost::check` hands a call a probe reach.
            return Err("this call cannot probe addresses: it is not a ping check".to_string());
        };
        if asked > MAX_BATCH {
            return Err(format!(
                "batch too large: {asked} probes asked, at most {MAX_BATCH} per call"
            ));
        }
        Ok(reach)
    }

    /// Whether this plugin may send `ask`: the one decision, in `grants`.
    fn allowed(&self, pools: &[ipnet::IpNet], ask: Ask<'_>) -> Result<(), String> {
        let in_pools = |a: IpAddr| pools.iter().any(|p| p.contains(&a));
        grants::check(self.plugin.world, &self.plugin.permissions, in_pools, ask)
            .map_err(|denied| denied.to_string())
    }

    /// Runs the probes `vetted` allowed (`Ok`), concurrently with `run`, and answers every
    /// entry in order: the refused ones with their reason.
    fn answer<T: Copy>(
        &self,
        vetted: Vec<Result<T, String>>,
        run: impl FnOnce(&[T]) -> Result<Vec<Option<Duration>>, String>,
    ) -> Vec<Answer> {
        let allowed: Vec<T> = vetted
            .iter()
            .filter_map(|v| v.as_ref().ok().copied())
            .collect();
        let mut answers = if allowed.is_empty() {
            Ok(Vec::new())
        } else {
            run(&allowed)
        };
        if let Ok(a) = &answers
            && a.len() != allowed.len()
        {
            // The probe functions answer one per probe; this guards the zip below.
            answers = Err("the host lost track of some probes".to_string());
        }
        let mut done = answers.clone().unwrap_or_default().into_iter();
        vetted
            .into_iter()
            .map(|v| match (v, &answers) {
                (Err(refused), _) => Err(refused),
                (Ok(_), Err(failed)) => Err(failed.clone()),
                (Ok(_), Ok(_)) => Ok(done.next().flatten().map(micros)),
            })
            .collect()
    }
}

/// A round trip in microseconds, as the contract has it (saturating: 71 minutes is far past
/// any timeout).
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn timeout(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms.min(MAX_TIMEOUT_MS)))
}

/// The longest part of a plugin's bad address quoted back in the error.
const QUOTED: usize = 64;

fn parse(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| {
        let mut shown: String = text.chars().take(QUOTED).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        format!("{shown:?} is not an IP address")
    })
}

impl probe::Host for CallState {
    fn icmp_echo(&mut self, addresses: Vec<String>, timeout_ms: u32) -> Vec<Answer> {
        let reach = match self.probe_reach(addresses.len()) {
            Ok(r) => r,
            Err(why) => return addresses.iter().map(|_| Err(why.clone())).collect(),
        };
        let vetted: Vec<Result<IpAddr, String>> = addresses
            .iter()
            .map(|text| {
                let address = parse(text)?;
                self.allowed(&reach.pools, Ask::IcmpEcho { address })?;
                Ok(address)
            })
            .collect();
        let runtime = reach.runtime.clone();
        self.answer(vetted, |addrs| {
            let batch = crate::probe::icmp_echo_batch(addrs, timeout(timeout_ms));
            crate::probe::block_on(&runtime, batch)
                .and_then(|answers| answers)
                .map_err(|e| {
                    tracing::warn!(plugin = %self.plugin.name, error = %e, "ICMP probes failed");
                    e.to_string()
                })
        })
    }

    fn tcp_connect(&mut self, targets: Vec<probe::TcpTarget>, timeout_ms: u32) -> Vec<Answer> {
        let reach = match self.probe_reach(targets.len()) {
            Ok(r) => r,
            Err(why) => return targets.iter().map(|_| Err(why.clone())).collect(),
        };
        let vetted: Vec<Result<(IpAddr, u16), String>> = targets
            .iter()
            .map(|t| {
                let address = parse(&t.address)?;
                let port = t.port;
                self.allowed(&reach.pools, Ask::TcpConnect { address, port })?;
                Ok((address, port))
            })
            .collect();
        let runtime = reach.runtime.clone();
        self.answer(vetted, |targets| {
            let batch = crate::probe::tcp_connect_batch(targets, timeout(timeout_ms));
            crate::probe::block_on(&runtime, batch).map_err(|e| {
                tracing::warn!(plugin = %self.plugin.name, error = %e, "TCP probes failed");
                e.to_string()
            })
        })
    }
}

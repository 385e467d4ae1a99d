//! The `probe` import of ping-check plugins: ICMP echoes and TCP connects, a batch at a time,
//! each probe checked by `grants` (inside weft's pools, on a granted port).

use super::bindings::imports::weft::plugin::probe;
use super::call::CallState;

/// What a ping check's probes may reach.
pub struct ProbeReach {
    /// weft's pools when the call began: probes never leave them.
    pub pools: Vec<ipnet::IpNet>,
    /// Where the probes of a batch run, concurrently.
    pub runtime: tokio::runtime::Handle,
}

impl probe::Host for CallState {
    fn icmp_echo(
        &mut self,
        addresses: Vec<String>,
        _timeout_ms: u32,
    ) -> Vec<Result<Option<u32>, String>> {
        addresses
            .iter()
            .map(|_| Err("probes are not built yet".to_string()))
            .collect()
    }

    fn tcp_connect(
        &mut self,
        targets: Vec<probe::TcpTarget>,
        _timeout_ms: u32,
    ) -> Vec<Result<Option<u32>, String>> {
        targets
            .iter()
            .map(|_| Err("probes are not built yet".to_string()))
            .collect()
    }
}

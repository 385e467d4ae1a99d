//! The `tcp-ping` ping check: an address is alive if any of a few TCP ports answers, for
//! hosts (or networks) that drop ICMP. A refused connect counts: the host sent the refusal.
//!
//! `[config]`: `ports`, comma-separated (default `22,80,443`; each must be granted in
//! `probe_ports`), and `timeout_ms` for each connect (default 500). Every port of every
//! target goes in one `tcp-connect` batch, so a call takes about one timeout however many
//! targets it has. The round-trip time reported is the fastest port's.
//!
//! An address whose every probe was refused by weft (a port not granted, an address outside
//! the pools) is left out of the answer: it was not checked, which is not the same as down.

wit_bindgen::generate!({
    path: "../../wit",
    world: "ping-check",
});

use exports::weft::plugin::checker::{Guest, Outcome};
use weft::plugin::config;
use weft::plugin::log::{self, Level};
use weft::plugin::probe::{self, TcpTarget};

/// The most probes weft takes in one call; a larger batch is sent in parts.
const MAX_PROBES_PER_CALL: usize = 4096;

struct TcpPing;

fn ports() -> Result<Vec<u16>, String> {
    let text = config::get("ports").unwrap_or_else(|| "22,80,443".to_string());
    let mut ports = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u16>() {
            Ok(p) if p != 0 => ports.push(p),
            _ => return Err(format!("ports: {part:?} is not a port (1-65535)")),
        }
    }
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return Err("ports: no port to try".to_string());
    }
    Ok(ports)
}

fn timeout_ms() -> Result<u32, String> {
    match config::get("timeout_ms") {
        None => Ok(500),
        Some(t) => t
            .trim()
            .parse()
            .map_err(|_| format!("timeout_ms: {t:?} is not a number of milliseconds")),
    }
}

impl Guest for TcpPing {
    fn check(targets: Vec<String>) -> Result<Vec<Outcome>, String> {
        let ports = ports()?;
        let timeout = timeout_ms()?;
        let probes: Vec<TcpTarget> = targets
            .iter()
            .flat_map(|address| {
                ports.iter().map(|&port| TcpTarget {
                    address: address.clone(),
                    port,
                })
            })
            .collect();
        let mut answers = Vec::with_capacity(probes.len());
        for part in probes.chunks(MAX_PROBES_PER_CALL) {
            answers.extend(probe::tcp_connect(part, timeout));
        }
        if answers.len() != probes.len() {
            return Err(format!(
                "weft answered {} of {} probes",
                answers.len(),
                probes.len()
            ));
        }
        let mut refusals = 0;
        let mut first_refusal = None;
        let mut outcomes = Vec::with_capacity(targets.len());
        for (address, answers) in targets.into_iter().zip(answers.chunks(ports.len())) {
            let mut checked = false;
            let mut fastest: Option<u32> = None;
            for answer in answers {
                match answer {
                    Ok(rtt) => {
                        checked = true;
                        if let Some(rtt) = *rtt {
                            fastest = Some(fastest.map_or(rtt, |f| f.min(rtt)));
                        }
                    }
                    Err(why) => {
                        refusals += 1;
                        first_refusal.get_or_insert_with(|| why.clone());
                    }
                }
            }
            if checked {
                outcomes.push(Outcome {
                    address,
                    alive: fastest.is_some(),
                    rtt_us: fastest,
                });
            }
        }
        if let Some(why) = first_refusal {
            log::log(
                Level::Warn,
                &format!("weft refused {refusals} probes, for example: {why}"),
            );
        }
        Ok(outcomes)
    }
}

export!(TcpPing);

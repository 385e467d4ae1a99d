//! End-to-end tests: each starts a real `weft serve` process on loopback with a fresh data dir
//! and talks to it over HTTP, as a user would.

/// The fixture: a running server, its token, and helpers for each kind of check.
mod support;

/// Every IPAM workflow of the API, every error case leaving the store unchanged, access rules.
mod api;

/// Concurrent clients: distinct addresses, exact exhaustion.
mod concurrency;

/// SIGKILL at random moments while clients allocate: nothing answered is lost or doubled.
mod crash;

/// schemathesis, a tool no one here wrote, fuzzing the served OpenAPI document.
mod schemathesis;

/// The web pages' foundation: `weft user add` with and without a server, login, setup link.
mod pages;

/// The IPAM pages in headless Chromium over WebDriver, with a screenshot of every page.
mod browser;

/// Plugins in a running server: API and CLI, hot reload, hostile plugins beside the API.
mod plugins;

/// `weft agent` as a real process: signed health, a replay refused across a SIGKILL restart.
mod agent;
mod dataplane;
mod netns;
mod nodes;

/// Two agents in namespaces and a mesh between them (shared with the meshplane bench).
mod pair;

/// Bytes through a mesh arrive whole, with the kernel offloads and without.
mod transfer;

/// Peers added, moved and removed over the UAPI while traffic flows.
mod churn;

/// Meshes across four agents in namespaces: apply, change, restart, repair, delete.
mod meshes;

/// `weft backup` under load: the copy holds every acknowledged allocation.
mod backup;

/// The systemd units pass `systemd-analyze verify` and keep their hardening.
mod systemd;

/// `weft serve` over HTTPS under a test CA.
mod tls;

/// `weft agent join` over HTTPS, on loopback and across network namespaces: a node enrols
/// with a join token and takes peers; bad tokens and plain HTTP are refused.
mod join;

//! The `ipam` and `http` imports of ipam-sync plugins: weft's store as the plugin may see and
//! change it (every change recorded with the plugin as its actor), and outbound HTTP to the
//! hosts its manifest grants.

use super::bindings::imports::weft::plugin::{http, ipam};
use super::call::CallState;

/// What a sync may reach.
pub struct SyncReach {
    pub store: crate::store::Store,
    /// Where outbound requests run.
    pub runtime: tokio::runtime::Handle,
}

const NOT_YET: &str = "sync imports are not built yet";

impl ipam::Host for CallState {
    fn pools(&mut self) -> Result<Vec<ipam::Pool>, String> {
        Err(NOT_YET.into())
    }
    fn records(
        &mut self,
        _pool: String,
        _cursor: Option<String>,
        _limit: u32,
    ) -> Result<ipam::RecordPage, String> {
        Err(NOT_YET.into())
    }
    fn upsert_device(&mut self, _device: ipam::Device) -> Result<(), String> {
        Err(NOT_YET.into())
    }
    fn delete_device(&mut self, _id: String) -> Result<(), String> {
        Err(NOT_YET.into())
    }
    fn reserve(&mut self, _address: String, _description: String) -> Result<(), String> {
        Err(NOT_YET.into())
    }
    fn release(&mut self, _address: String) -> Result<(), String> {
        Err(NOT_YET.into())
    }
    fn note(&mut self, _address: String, _text: String) -> Result<(), String> {
        Err(NOT_YET.into())
    }
}

impl http::Host for CallState {
    fn send(&mut self, _request: http::Request) -> Result<http::Response, String> {
        Err(NOT_YET.into())
    }
}

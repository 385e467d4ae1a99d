//! Devices: the inventory that feeds IPAM. A device's address is allocated with its facts;
//! when the device moves or goes, its old address is released.

use super::records::How;
use super::{Reader, Result, StoreError, Writer, encode, get_json};
use crate::ipam::{AddrType, Facts, IpKey, Status};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What a device sync sends.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    #[schema(value_type = String)]
    pub ip: IpAddr,
    pub hostname: Option<String>,
    pub mac: Option<String>,
    pub platform: Option<String>,
    pub manufacturer: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Device {
    pub id: String,
    #[schema(value_type = String)]
    pub ip: IpAddr,
    #[serde(flatten)]
    pub facts: Facts,
    #[schema(value_type = String)]
    pub updated: jiff::Timestamp,
}

impl Reader {
    pub fn device(&self, id: &str) -> Result<Option<Device>> {
        get_json(self.t.devices()?, "devices", id)
    }
}

impl Writer<'_> {
    /// Creates or updates a device and the record of its address.
    pub fn upsert_device(&mut self, id: &str, spec: &DeviceSpec, actor: &str) -> Result<Device> {
        if id.is_empty() || id.len() > 128 {
            return Err(StoreError::Invalid(
                "device id must be 1 to 128 characters".into(),
            ));
        }
        let facts = Facts {
            hostname: spec.hostname.clone(),
            mac: spec.mac.clone(),
            platform: spec.platform.clone(),
            manufacturer: spec.manufacturer.clone(),
        }
        .validated()?;
        if self.pool_containing(IpKey::from(spec.ip))?.is_none() {
            return Err(StoreError::OutsideEveryPool { address: spec.ip });
        }
        let old: Option<Device> = get_json(self.t.devices.table()?, "devices", id)?;
        if let Some(old) = &old
            && old.ip != spec.ip
        {
            self.release_device_address(old, actor)?;
        }
        // Read the pool after the release: it may be the same pool, with new counts.
        let mut pool = self
            .pool_containing(IpKey::from(spec.ip))?
            .ok_or(StoreError::OutsideEveryPool { address: spec.ip })?;
        let layout = pool.layout()?;
        let addr_type = if layout.in_static_region(IpKey::from(spec.ip).value) {
            AddrType::Static
        } else {
            AddrType::Dhcp
        };
        let device_facts = facts.clone();
        self.change(
            &mut pool,
            &layout,
            spec.ip,
            How::by(actor).action("device-sync"),
            |r| {
                let ours = r.status == Status::Allocated && r.device.as_deref() == Some(id);
                if !ours {
                    r.set_status(Status::Allocated)?;
                    r.addr_type = addr_type;
                }
                r.device = Some(id.to_string());
                r.set_facts(facts);
                Ok(())
            },
        )?;
        let device = Device {
            id: id.to_string(),
            ip: spec.ip,
            facts: device_facts,
            updated: self.now,
        };
        self.t.devices.insert(id, encode(&device).as_slice())?;
        Ok(device)
    }

    /// Deletes a device and releases its address.
    pub fn delete_device(&mut self, id: &str, actor: &str) -> Result<Device> {
        let device: Device = get_json(self.t.devices.table()?, "devices", id)?
            .ok_or_else(|| StoreError::NotFound(format!("device {id:?}")))?;
        self.release_device_address(&device, actor)?;
        self.t.devices.remove(id)?;
        Ok(device)
    }

    /// A static record returns to available with its facts cleared; a dhcp one is dropped
    /// (its history stays). An address someone has since taken over is left alone.
    fn release_device_address(&mut self, device: &Device, actor: &str) -> Result<()> {
        let Some(mut pool) = self.pool_containing(IpKey::from(device.ip))? else {
            return Ok(()); // its pool was deleted
        };
        let layout = pool.layout()?;
        match self.address(device.ip)? {
            Some(r) if r.device.as_deref() == Some(device.id.as_str()) => {
                self.change(
                    &mut pool,
                    &layout,
                    device.ip,
                    How::by(actor).action("device-release").dropping_dhcp(),
                    |r| Ok(r.set_status(Status::Available)?),
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

//! The CSV form of a pool's records: what export writes and import reads. Import parsing is
//! the edge: every row is checked here for shape (address, status, type), and by the store for
//! the pool's rules, before anything is written.

use super::error::ApiError;
use crate::ipam::{Facts, Record, Status};
use crate::store::{ImportRow, StoreError};
use std::collections::HashSet;
use std::net::IpAddr;

const COLUMNS: [&str; 10] = [
    "address",
    "status",
    "type",
    "hostname",
    "mac",
    "platform",
    "manufacturer",
    "owner",
    "description",
    "active",
];

/// Most rows one import may carry.
const MAX_ROWS: usize = 100_000;

pub fn export(records: &[Record]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    // Writing to a Vec cannot fail.
    let _ = w.write_record(COLUMNS);
    for r in records {
        let _ = w.write_record([
            r.address.to_string(),
            r.status.as_str().to_string(),
            r.addr_type.as_str().to_string(),
            opt(&r.hostname),
            opt(&r.mac),
            opt(&r.platform),
            opt(&r.manufacturer),
            opt(&r.owner),
            opt(&r.description),
            r.active.to_string(),
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn row_error(line: u64, reason: impl Into<String>) -> ApiError {
    StoreError::Import {
        line,
        reason: reason.into(),
    }
    .into()
}

/// Parses an import file. Columns are named by the header line; `address` and `status` are
/// required, the others optional; `active` is ignored (ping checks own it).
pub fn parse(body: &[u8]) -> Result<Vec<ImportRow>, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| row_error(1, format!("unreadable header: {e}")))?
        .clone();
    for h in &headers {
        if !COLUMNS.contains(&h) {
            return Err(row_error(
                1,
                format!("unknown column {h:?} (expected {})", COLUMNS.join(",")),
            ));
        }
    }
    for required in ["address", "status"] {
        if !headers.iter().any(|h| h == required) {
            return Err(row_error(1, format!("missing column {required:?}")));
        }
    }
    let col = |name: &str| headers.iter().position(|h| h == name);
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            row_error(line, format!("unreadable row: {e}"))
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if rows.len() == MAX_ROWS {
            return Err(row_error(line, format!("more than {MAX_ROWS} rows")));
        }
        let field = |name: &str| -> Option<String> {
            col(name)
                .and_then(|i| record.get(i))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let address: IpAddr = field("address")
            .ok_or_else(|| row_error(line, "address is empty"))?
            .parse()
            .map_err(|_| {
                row_error(
                    line,
                    format!(
                        "{:?} is not an IP address",
                        field("address").unwrap_or_default()
                    ),
                )
            })?;
        if !seen.insert(address) {
            return Err(row_error(line, format!("{address} appears twice")));
        }
        let status: Status = field("status")
            .ok_or_else(|| row_error(line, "status is empty"))?
            .parse()
            .map_err(|e: String| row_error(line, e))?;
        let addr_type = field("type")
            .map(|t| t.parse())
            .transpose()
            .map_err(|e: String| row_error(line, e))?;
        rows.push(ImportRow {
            line,
            address,
            status,
            addr_type,
            facts: Facts {
                hostname: field("hostname"),
                mac: field("mac"),
                platform: field("platform"),
                manufacturer: field("manufacturer"),
            },
            owner: field("owner"),
            description: field("description"),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_row_is_named_by_its_line() {
        let body = b"address,status\n10.0.0.5,allocated\n10.0.0.6,lost\n";
        let err = parse(body).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.message.starts_with("line 3:"), "{}", err.message);
    }

    #[test]
    fn export_then_parse_round_trips() {
        let mut r = Record::available(
            "10.0.0.5".parse().unwrap(),
            1,
            crate::ipam::AddrType::Static,
            jiff::Timestamp::UNIX_EPOCH,
        );
        r.status = Status::Reserved;
        r.description = Some("printer, 2nd floor".into());
        let rows = parse(export(&[r]).as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].description.as_deref(), Some("printer, 2nd floor"));
        assert_eq!(rows[0].line, 2);
    }

    #[test]
    fn duplicate_addresses_are_refused() {
        let err = parse(b"address,status\n10.0.0.5,allocated\n10.0.0.5,reserved\n").unwrap_err();
        assert!(err.message.contains("appears twice"));
    }
}

//! `/api/v1/addresses` and `/api/v1/devices`: list and filter, show, edit, release, history;
//! device sync.

use super::AppState;
use super::auth::{Admin, Reader};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::ipam::{AddrType, Record, Status};
use crate::store::{AddressFilter, AddressPatch, Device, DeviceSpec, Event, Page};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_addresses))
        .routes(routes!(get_address, patch_address))
        .routes(routes!(release))
        .routes(routes!(history))
        .routes(routes!(put_device, delete_device))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Pool id or name.
    pub pool: Option<String>,
    pub status: Option<Status>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub addr_type: Option<AddrType>,
    pub active: Option<bool>,
    /// Search: the start of an address or hostname, or the start or end of a MAC
    /// (case-insensitive). Address matches come first, in address order; then hostname and
    /// MAC matches, in the order of the matched text.
    pub q: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List addresses, filtered and cursor-paginated, in address order. Without `status`, the
/// stored records; with `status=available`, free addresses (stored or not). A page may hold
/// fewer rows than `limit` when the filter matches rarely: go on while `next_cursor` is set.
/// Access: any token.
#[utoipa::path(get, path = "/api/v1/addresses", tag = "addresses", params(ListParams),
    responses((status = 200, body = Page), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn list_addresses(
    State(s): State<AppState>,
    _: Reader,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<Page>, ApiError> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    if p.q
        .as_ref()
        .is_some_and(|q| q.len() > crate::ipam::search::MAX_QUERY)
    {
        return Err(ApiError::bad_request("q is longer than 100 characters"));
    }
    // A filtered page may scan thousands of rows: off the async workers.
    let store = s.store.clone();
    let page = tokio::task::spawn_blocking(move || {
        store.read(|r| {
            let pool = p.pool.as_deref().map(|name| r.pool(name)).transpose()?;
            let filter = AddressFilter {
                pool: pool.map(|p| p.id),
                status: p.status,
                addr_type: p.addr_type,
                active: p.active,
                q: p.q.clone().filter(|q| !q.is_empty()),
            };
            r.list(&filter, p.cursor.as_deref(), limit)
        })
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    Ok(Json(page))
}

fn parse_ip(ip: &str) -> Result<IpAddr, ApiError> {
    ip.parse()
        .map_err(|_| ApiError::bad_request(format!("{ip:?} is not an IP address")))
}

/// Show one address. Access: any token.
#[utoipa::path(get, path = "/api/v1/addresses/{ip}", tag = "addresses",
    params(("ip" = String, Path)),
    responses((status = 200, body = Record), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("token" = [])))]
async fn get_address(
    State(s): State<AppState>,
    _: Reader,
    ApiPath(ip): ApiPath<String>,
) -> Result<Json<Record>, ApiError> {
    let ip = parse_ip(&ip)?;
    Ok(Json(s.store.read(|r| r.address(ip))?))
}

/// Change an address: status (allocate, reserve, quarantine, back to available), description
/// (only while reserved), owner, device facts. Access: a write token.
#[utoipa::path(patch, path = "/api/v1/addresses/{ip}", tag = "addresses",
    params(("ip" = String, Path)), request_body = AddressPatch,
    responses((status = 200, body = Record), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = [])))]
async fn patch_address(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(ip): ApiPath<String>,
    ApiJson(patch): ApiJson<AddressPatch>,
) -> Result<Json<Record>, ApiError> {
    let ip = parse_ip(&ip)?;
    Ok(Json(
        s.store
            .write(move |w| w.patch(ip, &patch, &who.name))
            .await?,
    ))
}

/// Release an allocated address. Access: a write token.
#[utoipa::path(delete, path = "/api/v1/addresses/{ip}/allocation", tag = "allocations",
    params(("ip" = String, Path)),
    responses((status = 200, body = Record), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = [])))]
async fn release(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(ip): ApiPath<String>,
) -> Result<Json<Record>, ApiError> {
    let ip = parse_ip(&ip)?;
    Ok(Json(
        s.store.write(move |w| w.release(ip, &who.name)).await?,
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct History {
    pub events: Vec<Event>,
}

/// Every change to an address, oldest first. Access: any token.
#[utoipa::path(get, path = "/api/v1/addresses/{ip}/history", tag = "addresses",
    params(("ip" = String, Path)),
    responses((status = 200, body = History), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("token" = [])))]
async fn history(
    State(s): State<AppState>,
    _: Reader,
    ApiPath(ip): ApiPath<String>,
) -> Result<Json<History>, ApiError> {
    let ip = parse_ip(&ip)?;
    Ok(Json(History {
        events: s.store.read(|r| r.history(ip))?,
    }))
}

/// Create or update a device: its address becomes allocated with its facts; a moved device
/// releases its old address. Access: a write token.
#[utoipa::path(put, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path)), request_body = DeviceSpec,
    responses((status = 200, body = Device), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = [])))]
async fn put_device(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(spec): ApiJson<DeviceSpec>,
) -> Result<Json<Device>, ApiError> {
    Ok(Json(
        s.store
            .write(move |w| w.upsert_device(&id, &spec, &who.name))
            .await?,
    ))
}

/// Delete a device and release its address. Access: a write token.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn delete_device(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    s.store
        .write(move |w| w.delete_device(&id, &who.name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

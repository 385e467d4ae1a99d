//! `/api/v1/pools`: create, list, show, delete; allocations from a pool; CSV export and import.

use super::auth::{Admin, Reader};
use super::error::{ApiBody, ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::{AppState, csv_io};
use crate::ipam::Record;
use crate::store::{AllocationRequest, Pool, PoolSpec, PoolStats};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A pool as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PoolView {
    pub id: u64,
    pub name: String,
    #[schema(value_type = String)]
    pub cidr: IpNet,
    pub description: Option<String>,
    pub reserve_gateway: bool,
    pub static_ranges: Vec<String>,
    #[schema(value_type = String)]
    pub created: jiff::Timestamp,
    pub stats: PoolStats,
}

impl From<Pool> for PoolView {
    fn from(p: Pool) -> Self {
        let stats = p.stats();
        PoolView {
            id: p.id,
            name: p.name,
            cidr: p.cidr,
            description: p.description,
            reserve_gateway: p.reserve_gateway,
            static_ranges: p.static_ranges,
            created: p.created,
            stats,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PoolList {
    pub items: Vec<PoolView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Delete even if addresses are still allocated.
    #[serde(default)]
    pub force: bool,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pools, create_pool))
        .routes(routes!(get_pool, delete_pool))
        .routes(routes!(allocate))
        .routes(routes!(export_csv))
        .routes(routes!(import_csv))
}

/// List pools with their stats. Access: any token.
#[utoipa::path(get, path = "/api/v1/pools", tag = "pools",
    responses((status = 200, body = PoolList), (status = 401, body = ErrorBody)),
    security(("token" = [])))]
async fn list_pools(State(s): State<AppState>, _: Reader) -> Result<Json<PoolList>, ApiError> {
    let pools = s.store.read(|r| r.pools())?;
    Ok(Json(PoolList {
        items: pools.into_iter().map(PoolView::from).collect(),
    }))
}

/// Create a pool. Access: a write token.
#[utoipa::path(post, path = "/api/v1/pools", tag = "pools", request_body = PoolSpec,
    responses((status = 201, body = PoolView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "name taken or overlaps another pool", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("token" = [])))]
async fn create_pool(
    State(s): State<AppState>,
    who: Admin,
    ApiJson(spec): ApiJson<PoolSpec>,
) -> Result<(StatusCode, Json<PoolView>), ApiError> {
    let pool = s
        .store
        .write(move |w| w.create_pool(&spec, &who.name))
        .await?;
    Ok((StatusCode::CREATED, Json(pool.into())))
}

/// Show one pool (by id or name). Access: any token.
#[utoipa::path(get, path = "/api/v1/pools/{pool}", tag = "pools",
    params(("pool" = String, Path, description = "pool id or name")),
    responses((status = 200, body = PoolView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn get_pool(
    State(s): State<AppState>,
    _: Reader,
    ApiPath(pool): ApiPath<String>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(s.store.read(|r| r.pool(&pool))?.into()))
}

/// Delete a pool; refused while it holds allocations unless `force=true`, and always while it
/// is the overlay pool or a node's peer pool (409). Access: a write token.
#[utoipa::path(delete, path = "/api/v1/pools/{pool}", tag = "pools",
    params(("pool" = String, Path, description = "pool id or name"), DeleteParams),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("token" = [])))]
async fn delete_pool(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(pool): ApiPath<String>,
    ApiQuery(p): ApiQuery<DeleteParams>,
) -> Result<StatusCode, ApiError> {
    s.store
        .write(move |w| w.delete_pool(&pool, p.force))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Allocate the next free address, or a given one. An `Idempotency-Key` header makes a
/// retry return the first attempt's address. Access: a write token.
#[utoipa::path(post, path = "/api/v1/pools/{pool}/allocations", tag = "allocations",
    params(("pool" = String, Path, description = "pool id or name"),
        ("Idempotency-Key" = Option<String>, Header, description = "retry-safe key (1-200 characters)")),
    request_body = AllocationRequest,
    responses((status = 201, body = Record), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "taken or exhausted", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = [])))]
async fn allocate(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(pool): ApiPath<String>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<(StatusCode, Json<Record>), ApiError> {
    let key = match headers.get("idempotency-key") {
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Idempotency-Key must be 1 to 200 visible ASCII characters",
                    )
                })?;
            Some(k.to_string())
        }
        None => None,
    };
    // An empty body asks for the next free address.
    let req: AllocationRequest = if body.iter().all(u8::is_ascii_whitespace) {
        AllocationRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(ApiError::from_json)?
    };
    let (rec, replayed) = s
        .store
        .write(move |w| w.allocate_once(&pool, &req, key.as_deref(), &who.name))
        .await?;
    if !replayed {
        s.metrics.allocations.inc();
    }
    Ok((StatusCode::CREATED, Json(rec)))
}

/// The pool's stored records as CSV. Access: any token.
#[utoipa::path(get, path = "/api/v1/pools/{pool}/export.csv", tag = "pools",
    params(("pool" = String, Path, description = "pool id or name")),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn export_csv(
    State(s): State<AppState>,
    _: Reader,
    ApiPath(pool): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let records = s.store.read(|r| {
        let p = r.pool(&pool)?;
        r.pool_records(&p)
    })?;
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        csv_io::export(&records),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Rows written.
    pub imported: usize,
}

/// Import a CSV file (the export's columns). Every row is checked first; one bad row rejects
/// the whole file, with its line number, and nothing is written. Access: a write token.
#[utoipa::path(post, path = "/api/v1/pools/{pool}/import", tag = "pools",
    params(("pool" = String, Path, description = "pool id or name")),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = [])))]
async fn import_csv(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(pool): ApiPath<String>,
    ApiBody(body): ApiBody,
) -> Result<Json<ImportReport>, ApiError> {
    let rows = csv_io::parse(&body)?;
    let imported = s
        .store
        .write(move |w| w.import(&pool, &rows, &who.name))
        .await?;
    Ok(Json(ImportReport { imported }))
}

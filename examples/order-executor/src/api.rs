//! The HTTP API: `POST /api/orders/execute` and `GET /health`.
//!
//! An order is answered only once Herald has its `pending` event, so a watcher who connects with the
//! returned `wsUrl` always finds the order's topic. The rest of the order runs in a background task, one
//! per order, holding one of a fixed number of slots; with every slot taken the answer is 503.
//!
//! Every error answer is `{"success": false, "error": {"code", "message"}}`; its HTTP status and code come
//! from [`ExecuteError::status_and_code`] alone.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::rngs::StdRng;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::executor::{self, Outcome, Simulation};
use crate::herald::{Herald, Publish, PublishError};
use crate::order::{Invalid, OrderId, OrderRequest, RawOrder};

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    herald: Herald,
    simulation: Simulation,
    /// `ws://host:port` of Herald as the order's watchers reach it, without a trailing `/`.
    ws_base: String,
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    /// Seeds each order's own generator; behind a lock because requests arrive on any thread.
    seeds: Mutex<StdRng>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl AppState {
    pub fn new(
        herald: Herald,
        simulation: Simulation,
        ws_base: String,
        max_in_flight: usize,
        seeds: StdRng,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self(Arc::new(Inner {
            herald,
            simulation,
            ws_base: ws_base.trim_end_matches('/').to_owned(),
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            seeds: Mutex::new(seeds),
            tracker,
            cancel,
        }))
    }

    fn in_flight(&self) -> usize {
        self.0.max_in_flight - self.0.slots.available_permits()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders/execute", post(execute))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(state)
}

#[derive(Debug, Error)]
pub enum ExecuteError {
    #[error("the body could not be read: {0}")]
    Body(#[from] BytesRejection),
    #[error("the body is not an order: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0} orders are in flight already; try again shortly")]
    Busy(usize),
    #[error("Herald did not take the order's first event: {0}")]
    Herald(#[from] PublishError),
}

impl ExecuteError {
    /// The one place an error becomes an HTTP status and an error code.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ExecuteError::Body(rejection) => (rejection.status(), "invalid_request"),
            ExecuteError::Malformed(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ExecuteError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ExecuteError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_orders"),
            ExecuteError::Herald(_) => (StatusCode::BAD_GATEWAY, "herald_unavailable"),
        }
    }
}

impl IntoResponse for ExecuteError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        failure(status, code, self.to_string())
    }
}

#[derive(Serialize)]
struct Failure<'a> {
    success: bool,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
}

fn failure(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(Failure { success: false, error: ErrorBody { code, message } })).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    success: bool,
    order_id: String,
    status: &'static str,
    message: &'static str,
    ws_url: String,
}

/// The body is taken as bytes and parsed here, so that a body that is not an order gets the same JSON error
/// as one that breaks a rule (axum's `Json` extractor would answer in plain text).
async fn execute(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, ExecuteError> {
    let raw: RawOrder = serde_json::from_slice(&body?).map_err(ExecuteError::Malformed)?;
    let order = OrderRequest::parse(raw)?;
    let slot = Arc::clone(&app.0.slots).try_acquire_owned().map_err(|_| ExecuteError::Busy(app.0.max_in_flight))?;

    // The id comes from the operating system's randomness even under `--seed`: a repeated id would meet its
    // earlier, finished topic in Herald and be refused.
    let id = OrderId::new_v4(&mut rand::rng());
    let pending = executor::pending(&order);
    if let Err(e) = app.0.herald.publish(&id, &pending).await {
        tracing::warn!(order = %id, error = %e, "Herald did not take the pending event; the order is dropped");
        return Err(e.into());
    }

    let rng = executor::order_rng(&mut app.0.seeds.lock().unwrap_or_else(PoisonError::into_inner));
    let task_app = app.clone();
    let task_id = id.clone();
    let span = tracing::info_span!("order", id = %id);
    app.0.tracker.spawn(
        async move {
            // The slot is freed when the order ends, however it ends.
            let _slot = slot;
            let inner = &task_app.0;
            let (token_in, token_out) = (order.token_in.as_str(), order.token_out.as_str());
            tracing::info!(token_in, token_out, amount = order.amount, "executing");
            let outcome = executor::run(&task_id, &order, &inner.herald, &inner.simulation, rng, &inner.cancel).await;
            log_outcome(&outcome);
        }
        .instrument(span),
    );

    let ws_url = format!("{}/api/orders/status/{id}", app.0.ws_base);
    Ok(Json(Accepted {
        success: true,
        order_id: id.to_string(),
        status: "pending",
        message: "Order created and enqueued for processing",
        ws_url,
    }))
}

fn log_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Confirmed { tx_hash, dex } => tracing::info!(%tx_hash, dex = dex.name(), "confirmed"),
        Outcome::Failed { error } => tracing::info!(%error, "failed"),
        Outcome::Stopped(e) if e.is_invalid_transition() => {
            tracing::warn!(error = %e, "Herald refused a step for the order's lifecycle; the order is stopped")
        }
        Outcome::Stopped(e @ PublishError::Unauthorized { .. }) => {
            tracing::error!(error = %e, "Herald refused the API key; the order is stopped")
        }
        Outcome::Stopped(e) => tracing::error!(error = %e, "Herald did not take a step; the order is stopped"),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    status: &'static str,
    in_flight: usize,
}

async fn health(State(app): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok", in_flight: app.in_flight() })
}

async fn not_found() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; this executor serves POST /api/orders/execute and GET /health".to_owned(),
    )
}

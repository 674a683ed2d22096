//! Targeted mode: U connected users; M notifications, each to one random connected user,
//! published over the HTTP API; every delivery checked and timed.

use std::sync::Arc;

use super::fleet::ShareContext;
use super::users;
use crate::error::BenchError;
use crate::plan::UserLoad;
use crate::share::ShareReport;
use crate::workers::Control;

pub async fn run(ctx: &Arc<ShareContext>, load: &UserLoad, control: &mut Control) -> Result<ShareReport, BenchError> {
    users::run(ctx, load.notifications, control, |deliveries| async move {
        Ok(users::publish(ctx, &deliveries, load).await?)
    })
    .await
}

//! The errors that end a run, one variant per layer that can raise them. Problems inside a
//! run — a refused connection, a failed publish, a lost notification — are not errors: they
//! are counted in the report.

use crate::amqp::AmqpError;
use crate::floor::FloorError;
use crate::plan::PlanError;
use crate::publish::PublishError;
use crate::rss::RssError;
use crate::workers::WorkerError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error(transparent)]
    Rss(#[from] RssError),
    #[error(transparent)]
    Floor(#[from] FloorError),
    #[error("{0}")]
    Usage(&'static str),
    #[error("{0}")]
    Setup(String),
}

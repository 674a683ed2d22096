//! The single-node broker: events go straight to this process's hub.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Broker, BrokerError, BrokerHealth};
use crate::domain::InboxEvent;
use crate::hub::Hub;
use crate::topics::SharedChange;

pub struct Memory {
    hub: Arc<Hub>,
}

impl Memory {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

#[async_trait]
impl Broker for Memory {
    async fn publish(&self, events: Vec<InboxEvent>) -> Result<(), BrokerError> {
        self.hub.dispatch(&events);
        Ok(())
    }

    async fn publish_topics(&self, changes: Vec<SharedChange>) -> Result<(), BrokerError> {
        self.hub.topics.dispatch(&changes);
        Ok(())
    }

    fn health(&self) -> BrokerHealth {
        BrokerHealth { ok: true, backend: "memory" }
    }
}

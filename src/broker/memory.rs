//! The single-node broker: events go straight to this process's hub.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Broker, BrokerError, BrokerHealth, Headcount};
use crate::domain::{InboxEvent, UserId};
use crate::hub::Hub;
use crate::topics::SharedChange;

pub struct Memory {
    hub: Arc<Hub>,
    node: String,
}

impl Memory {
    pub fn new(hub: Arc<Hub>, node: String) -> Self {
        Self { hub, node }
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

    async fn presence(&self, user: &UserId) -> Result<Headcount, BrokerError> {
        let connections = self.hub.registry.connections_of(user) as u64;
        Ok(Headcount { connections, nodes: 1, nodes_asked: 1 })
    }

    fn health(&self) -> BrokerHealth {
        BrokerHealth { ok: true, backend: "memory", node: self.node.clone(), peers: None }
    }
}

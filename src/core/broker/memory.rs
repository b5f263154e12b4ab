//! The embedded broker: one node, so "every node" is this one and delivery is a call.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Broker, BrokerError, BrokerMessage, BrokerSink};

pub struct InProcessBroker {
    sink: Arc<dyn BrokerSink>,
}

impl InProcessBroker {
    pub fn new(sink: Arc<dyn BrokerSink>) -> Self {
        InProcessBroker { sink }
    }
}

#[async_trait]
impl Broker for InProcessBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        self.sink.deliver(message);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

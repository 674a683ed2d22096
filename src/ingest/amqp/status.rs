//! Each consumer's state, for `/health` and the `herald_amqp_consumer_state` gauge.

use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Connecting,
    Consuming,
    Down { error: String },
    Stopped,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Consuming => "consuming",
            State::Down { .. } => "down",
            State::Stopped => "stopped",
        }
    }
}

const STATES: [&str; 4] = ["connecting", "consuming", "down", "stopped"];

/// What `/health` shows of one consumer.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerHealth {
    pub queue: String,
    pub state: &'static str,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub struct Status {
    queue: String,
    required: bool,
    state: Mutex<(State, Option<String>)>,
}

impl Status {
    pub fn new(queue: &str, required: bool) -> Self {
        let status = Self { queue: queue.to_owned(), required, state: Mutex::new((State::Connecting, None)) };
        status.export(&State::Connecting);
        status
    }

    pub fn set(&self, state: State) {
        self.export(&state);
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let State::Down { error } = &state {
            guard.1 = Some(error.clone());
        }
        guard.0 = state;
    }

    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone()
    }

    /// Healthy unless it is required and not consuming.
    pub fn ok(&self) -> bool {
        !self.required || self.state() == State::Consuming
    }

    pub fn health(&self) -> ConsumerHealth {
        let guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ConsumerHealth {
            queue: self.queue.clone(),
            state: guard.0.name(),
            required: self.required,
            last_error: guard.1.clone(),
        }
    }

    /// One gauge per state, 1 for the current one: a Prometheus alert can say `state="down" == 1`.
    fn export(&self, state: &State) {
        for name in STATES {
            let value = if name == state.name() { 1.0 } else { 0.0 };
            metrics::gauge!("herald_amqp_consumer_state", "queue" => self.queue.clone(), "state" => name).set(value);
        }
    }
}

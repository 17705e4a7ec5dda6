//! The circuit breaker of one destination: after `breaker_failures` consecutive failed attempts it opens, and
//! no attempt is made for `breaker_cooldown`; then it is half-open: one probe attempt goes out, and its success
//! closes the breaker while its failure opens it again for another cool-down. Attempts waiting for the breaker
//! keep their place (the alert is not failed, only delayed). Its state is the gauge
//! `netanom.router.destination.breaker{destination}` (0 closed, 1 open, 2 half-open).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Gauge;
use tokio::time::Instant;

/// How often a waiting attempt looks at the breaker again while another one probes.
const PROBE_POLL: Duration = Duration::from_millis(25);

/// The breaker's state, as the gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Attempts go out.
    Closed = 0,
    /// No attempt until the cool-down ends.
    Open = 1,
    /// One probe attempt is out or may go out.
    HalfOpen = 2,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe`: when the probe attempt went out (none yet: the next caller probes).
    HalfOpen {
        probe: Option<Instant>,
    },
}

/// The breaker of one destination.
#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    cooldown: Duration,
    state: Mutex<State>,
    gauge: Gauge<u64>,
    label: [KeyValue; 1],
}

impl Breaker {
    /// A closed breaker for `destination`, opening after `failures_to_open` consecutive failures (0: never) for
    /// `cooldown`.
    pub fn new(destination: &str, failures_to_open: u32, cooldown: Duration) -> Self {
        let gauge = opentelemetry::global::meter("netanom")
            .u64_gauge("netanom.router.destination.breaker")
            .with_description("Circuit breaker state per destination: 0 closed, 1 open, 2 half-open")
            .build();
        let label = [KeyValue::new("destination", destination.to_string())];
        gauge.record(BreakerState::Closed as u64, &label);
        Self { failures_to_open, cooldown, state: Mutex::new(State::Closed { consecutive: 0 }), gauge, label }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Waits until an attempt may go out: at once when closed; when open, until the cool-down ends and this
    /// caller is the probe; when half-open, until no other probe is out. A probe that never reports (its task
    /// was cancelled) is replaced after a cool-down.
    pub async fn admit(&self) {
        loop {
            let wait_until = {
                let now = Instant::now();
                let mut state = self.lock();
                match *state {
                    State::Closed { .. } => return,
                    State::Open { until } if now >= until => {
                        *state = State::HalfOpen { probe: Some(now) };
                        drop(state);
                        self.publish(BreakerState::HalfOpen);
                        return;
                    }
                    State::Open { until } => until,
                    State::HalfOpen { probe } if probe.is_none_or(|p| now >= p + self.cooldown) => {
                        *state = State::HalfOpen { probe: Some(now) };
                        return;
                    }
                    State::HalfOpen { .. } => now + PROBE_POLL,
                }
            };
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// Records the result of an attempt that [`Breaker::admit`] let out: `ok` when the destination answered
    /// (a refusal included), not when it failed in a way a retry may fix.
    pub fn record(&self, ok: bool) {
        let changed = {
            let mut state = self.lock();
            let before = state_of(&state);
            match (&mut *state, ok) {
                (_, true) => *state = State::Closed { consecutive: 0 },
                (State::Closed { consecutive }, false) => {
                    *consecutive += 1;
                    if self.failures_to_open > 0 && *consecutive >= self.failures_to_open {
                        *state = State::Open { until: Instant::now() + self.cooldown };
                    }
                }
                (State::HalfOpen { .. }, false) => *state = State::Open { until: Instant::now() + self.cooldown },
                (State::Open { .. }, false) => {}
            }
            let after = state_of(&state);
            (before != after).then_some(after)
        };
        if let Some(after) = changed {
            if after == BreakerState::Open {
                tracing::warn!(destination = %self.label[0].value, cooldown = ?self.cooldown,
                    "circuit breaker open: no attempt until the cool-down ends");
            } else if after == BreakerState::Closed {
                tracing::info!(destination = %self.label[0].value, "circuit breaker closed");
            }
            self.publish(after);
        }
    }

    fn publish(&self, state: BreakerState) {
        self.gauge.record(state as u64, &self.label);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn state_of(state: &State) -> BreakerState {
    match state {
        State::Closed { .. } => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_probes_after_the_cooldown_and_closes_on_success() {
        let b = Breaker::new("t", 3, Duration::from_secs(30));
        for _ in 0..2 {
            b.admit().await;
            b.record(false);
        }
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed, "a success resets the count");
        for _ in 0..3 {
            b.admit().await;
            b.record(false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        let t0 = Instant::now();
        b.admit().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(30), "no attempt during the cool-down");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A second caller waits while the probe is out.
        let second = tokio::time::timeout(Duration::from_secs(1), b.admit()).await;
        assert!(second.is_err(), "only one probe at a time");
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open, "a failed probe opens again");
        let t1 = Instant::now();
        b.admit().await;
        assert_eq!(t1.elapsed(), Duration::from_secs(30));
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
        b.admit().await;
        assert_eq!(t1.elapsed(), Duration::from_secs(30), "closed: no wait");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_failures_never_opens() {
        let b = Breaker::new("t", 0, Duration::from_secs(30));
        for _ in 0..100 {
            b.admit().await;
            b.record(false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}

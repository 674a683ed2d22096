//! The executor driven against a recording publisher at speed 0, checked against Herald's `order` lifecycle.

use std::sync::Mutex;

use super::*;
use crate::order::RawOrder;

/// Records what it is given, and refuses (409 `invalid_transition`) the event at `refuse_at` if set.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    refuse_at: Option<usize>,
}

impl Publish for Recorder {
    async fn publish(&self, _order: &OrderId, event: &Event) -> Result<u64, PublishError> {
        let mut events = self.events.lock().unwrap();
        if self.refuse_at == Some(events.len()) {
            return Err(PublishError::Refused {
                status: 409,
                code: "invalid_transition".into(),
                message: "refused by the test".into(),
            });
        }
        events.push(event.clone());
        Ok(events.len() as u64)
    }
}

impl Recorder {
    fn steps(&self) -> Vec<(Status, u8)> {
        self.events.lock().unwrap().iter().map(|e| (e.status, e.progress)).collect()
    }
}

/// Herald's `order` lifecycle, written out again: the statuses each may be followed by (besides itself).
fn allowed_next(status: Status) -> &'static [Status] {
    use Status::*;
    match status {
        Pending => &[Routing, Failed],
        Routing => &[Building, Failed],
        Building => &[Submitted, Failed],
        Submitted => &[Confirmed, ExecutionFailed, Failed],
        ExecutionFailed => &[RetryPending, Failed],
        RetryPending => &[Building, Submitted, Failed],
        Confirmed | Failed => &[],
    }
}

/// Whether Herald would take every step of `steps` in turn, and the last one is final.
fn check_lifecycle(steps: &[(Status, u8)]) -> Result<(), String> {
    let Some(&(first, _)) = steps.first() else { return Err("no events".into()) };
    if first != Status::Pending {
        return Err(format!("starts at {first}, not pending"));
    }
    for pair in steps.windows(2) {
        let ((from, before), (to, after)) = (pair[0], pair[1]);
        if from.is_terminal() {
            return Err(format!("{to} after the final {from}"));
        }
        if to == from && after < before {
            return Err(format!("{from} progress went back from {before} to {after}"));
        }
        if to != from && !allowed_next(from).contains(&to) {
            return Err(format!("{from} cannot be followed by {to}"));
        }
        if after > 100 {
            return Err(format!("progress {after} is over 100"));
        }
    }
    match steps.last() {
        Some((last, _)) if last.is_terminal() => Ok(()),
        last => Err(format!("ends at {last:?}, which is not final")),
    }
}

fn order(slippage: f64) -> OrderRequest {
    OrderRequest::parse(RawOrder {
        token_in: "SOL".into(),
        token_out: "USDC".into(),
        amount: 10.0,
        slippage: Some(slippage),
    })
    .unwrap()
}

/// Runs one order to its end, `pending` included, at speed 0.
async fn execute(recorder: &Recorder, slippage: f64, fail_rate: f64, seed: u64) -> Outcome {
    execute_with(recorder, slippage, fail_rate, seed, &CancellationToken::new()).await
}

async fn execute_with(
    recorder: &Recorder,
    slippage: f64,
    fail_rate: f64,
    seed: u64,
    cancel: &CancellationToken,
) -> Outcome {
    let id = OrderId::new_v4(&mut StdRng::seed_from_u64(seed));
    let order = order(slippage);
    let simulation = Simulation::new(0.0, fail_rate).unwrap();
    recorder.publish(&id, &pending(&order)).await.unwrap();
    run(&id, &order, recorder, &simulation, StdRng::seed_from_u64(seed), cancel).await
}

#[test]
fn the_checker_refuses_what_herald_would() {
    use Status::*;
    assert!(check_lifecycle(&[(Pending, 0), (Routing, 10), (Failed, 0)]).is_ok());
    assert!(check_lifecycle(&[(Routing, 10), (Failed, 0)]).is_err(), "must start at pending");
    assert!(check_lifecycle(&[(Pending, 0), (Building, 50), (Failed, 0)]).is_err(), "skipped routing");
    assert!(check_lifecycle(&[(Pending, 0), (Routing, 30), (Routing, 10), (Failed, 0)]).is_err(), "backwards");
    assert!(check_lifecycle(&[(Pending, 0), (Failed, 0), (Routing, 10)]).is_err(), "after final");
    assert!(check_lifecycle(&[(Pending, 0), (Routing, 10)]).is_err(), "not final");
}

#[tokio::test]
async fn every_run_is_valid_for_the_order_lifecycle() {
    let mut endings = std::collections::BTreeMap::<String, usize>::new();
    for seed in 0..300 {
        let (slippage, fail_rate) = [(0.5, 0.2), (0.0, 0.5), (50.0, 0.9), (0.1, 1.0)][seed as usize % 4];
        let recorder = Recorder::default();
        let outcome = execute(&recorder, slippage, fail_rate, seed).await;
        let steps = recorder.steps();
        check_lifecycle(&steps).unwrap_or_else(|e| panic!("seed {seed}: {e}: {steps:?}"));
        let ending = match outcome {
            Outcome::Confirmed { .. } => "confirmed".to_owned(),
            Outcome::Failed { error } => error.split(';').next().unwrap_or_default().to_owned(),
            Outcome::Stopped(e) => panic!("seed {seed}: stopped: {e}"),
        };
        *endings.entry(ending).or_default() += 1;
    }
    // The runs covered each way an order can end.
    assert!(endings.contains_key("confirmed"), "{endings:?}");
    assert!(endings.contains_key("slippage exceeded"), "{endings:?}");
    assert!(endings.contains_key("all 3 attempts failed"), "{endings:?}");
}

#[tokio::test]
async fn a_smooth_order_goes_straight_to_confirmed() {
    use Status::*;
    let recorder = Recorder::default();
    let outcome = execute(&recorder, 50.0, 0.0, 1).await;
    assert_eq!(
        recorder.steps(),
        [(Pending, 0), (Routing, 10), (Routing, 30), (Building, 50), (Building, 70), (Submitted, 80), (Confirmed, 100)]
    );
    let events = recorder.events.lock().unwrap();
    let Outcome::Confirmed { tx_hash, dex } = outcome else { panic!("{outcome:?}") };
    assert_eq!(tx_hash.len(), 44);
    assert_eq!(events[6].data["txHash"], tx_hash.as_str());
    assert_eq!(events[6].data["dex"], dex.name());
    assert_eq!(events[2].message, "Received 2 quotes");
    assert_eq!(events[2].data["quotesFetched"], 2);
    assert_eq!(events[2].data["quotes"].as_array().map(Vec::len), Some(2));
    assert_eq!(events[3].data["chosenDex"], dex.name());
    assert_eq!(events[3].message, format!("Building transaction on {}...", dex.name()));
    assert_eq!(events[3].data["quote"]["dex"], dex.name());
    assert_eq!((&events[5].data["attempt"], &events[5].data["maxAttempts"]), (&json!(1), &json!(3)));
}

#[tokio::test]
async fn the_chosen_dex_is_the_better_quote() {
    for seed in 0..50 {
        let recorder = Recorder::default();
        execute(&recorder, 50.0, 0.0, seed).await;
        let events = recorder.events.lock().unwrap();
        let quotes = events[2].data["quotes"].as_array().unwrap();
        let out = |q: &Value| q["amountOutDecimal"].as_str().unwrap().parse::<f64>().unwrap();
        let better = if out(&quotes[1]) > out(&quotes[0]) { &quotes[1] } else { &quotes[0] };
        assert_eq!(events[3].data["chosenDex"], better["dex"], "seed {seed}");
    }
}

#[tokio::test]
async fn failed_submissions_retry_with_rising_progress_then_fail() {
    use Status::*;
    let recorder = Recorder::default();
    let outcome = execute(&recorder, 50.0, 1.0, 2).await;
    assert_eq!(
        recorder.steps(),
        [
            (Pending, 0),
            (Routing, 10),
            (Routing, 30),
            (Building, 50),
            (Building, 70),
            (Submitted, 80),
            (ExecutionFailed, 80),
            (RetryPending, 80),
            (Submitted, 85),
            (ExecutionFailed, 85),
            (RetryPending, 85),
            (Submitted, 90),
            (ExecutionFailed, 90),
            (Failed, 0),
        ]
    );
    let events = recorder.events.lock().unwrap();
    assert_eq!(events[7].data["nextAttempt"], 2);
    assert_eq!(events[7].data["retryInMs"], 0, "speed 0 waits for nothing");
    assert_eq!(events[11].message, "Submitting transaction (attempt 3/3)...");
    assert!(matches!(outcome, Outcome::Failed { error } if error.starts_with("all 3 attempts failed")));
    assert!(events[13].data["error"].as_str().is_some_and(|e| e.starts_with("all 3 attempts failed")));
}

#[tokio::test]
async fn a_price_move_past_the_slippage_fails_the_order() {
    // With no slippage allowed, any downward move fails; some seed among the first few moves down.
    for seed in 0..20 {
        let recorder = Recorder::default();
        if let Outcome::Failed { error } = execute(&recorder, 0.0, 0.0, seed).await {
            assert_eq!(error, "slippage exceeded");
            let events = recorder.events.lock().unwrap();
            let last = events.last().unwrap();
            assert_eq!((last.status, last.data["error"].as_str()), (Status::Failed, Some("slippage exceeded")));
            return;
        }
    }
    panic!("no order of 20 met a price move past a slippage of 0");
}

#[tokio::test]
async fn a_refused_event_stops_the_order() {
    let recorder = Recorder { refuse_at: Some(2), ..Recorder::default() };
    let outcome = execute(&recorder, 0.5, 0.2, 3).await;
    assert!(matches!(&outcome, Outcome::Stopped(e) if e.is_invalid_transition()), "{outcome:?}");
    assert_eq!(recorder.steps(), [(Status::Pending, 0), (Status::Routing, 10)], "nothing after the refusal");
}

#[tokio::test]
async fn a_cancelled_order_is_marked_failed() {
    let recorder = Recorder::default();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let outcome = execute_with(&recorder, 0.5, 0.2, 4, &cancel).await;
    assert!(matches!(&outcome, Outcome::Failed { error } if error.contains("shut down")), "{outcome:?}");
    assert_eq!(recorder.steps(), [(Status::Pending, 0), (Status::Failed, 0)]);
}

#[tokio::test]
async fn a_seed_repeats_the_run() {
    let (a, b) = (Recorder::default(), Recorder::default());
    execute(&a, 0.5, 0.5, 9).await;
    execute(&b, 0.5, 0.5, 9).await;
    assert_eq!(*a.events.lock().unwrap(), *b.events.lock().unwrap());
}

#[test]
fn delays_are_scaled_by_the_speed() {
    let base = Duration::from_millis(200);
    assert_eq!(Simulation::new(1.0, 0.2).unwrap().delay(base), base);
    assert_eq!(Simulation::new(0.01, 0.2).unwrap().delay(base), Duration::from_millis(2));
    assert_eq!(Simulation::new(2.5, 0.2).unwrap().delay(base), Duration::from_millis(500));
    assert_eq!(Simulation::new(0.0, 0.2).unwrap().delay(base), Duration::ZERO);
    assert!(Simulation::new(-1.0, 0.2).is_err() && Simulation::new(f64::NAN, 0.2).is_err());
    assert!(Simulation::new(1.0, 1.5).is_err() && Simulation::new(1.0, -0.1).is_err());
}

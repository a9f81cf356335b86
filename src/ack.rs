//! End-to-end acknowledgement: [`BatchNotifier`] and [`AckToken`].
//!
//! A source creates one [`BatchNotifier`] per *input* (a file, a pull batch, a queue row) and
//! attaches an [`AckToken`] to every envelope it makes from that input. Stages pass the token
//! on to the envelopes they derive ([`AckToken::derive`]); the sink runner resolves each
//! token after the durable commit ([`BatchStatus::Delivered`]) or after the dead-letter write
//! ([`BatchStatus::DeadLettered`]). When the last token of a batch is gone, the source's
//! [`BatchReceiver`] yields the merged status and only then may the source release its input.
//!
//! The contract that makes loss impossible: **a token that is dropped without being resolved
//! counts as [`BatchStatus::Failed`]** (shutdown, panic, a bug that forgets a message). A
//! failed batch is never released; the source re-delivers it later, and the idempotent sink
//! turns that re-delivery into a no-op. Status merge is order independent: the worst status
//! wins (`Failed > DeadLettered > Delivered`).
//!
//! **Bytes in flight.** A batch can hold a share of its pipeline's [`ByteBudget`]
//! ([`AckToken::hold`]); the share returns when the batch settles, so the raw bytes of all
//! unsettled inputs stay under the budget whatever their size and number.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::ReasonCode;

/// The merged outcome of every envelope made from one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Every envelope was durably committed by its sink.
    Delivered = 0,
    /// Every envelope was committed or written to the dead-letter store (at least one was).
    /// The input may be released: nothing is lost, the rejects are kept with their bytes.
    DeadLettered = 1,
    /// Some envelope was neither committed nor dead-lettered. The input must stay.
    Failed = 2,
}

impl BatchStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => BatchStatus::Delivered,
            1 => BatchStatus::DeadLettered,
            _ => BatchStatus::Failed,
        }
    }

    /// True when the source may release (delete, move, acknowledge) its input.
    pub fn may_release(self) -> bool {
        !matches!(self, BatchStatus::Failed)
    }
}

/// Counts batches that a source has started and whose acknowledgement has not resolved yet,
/// and remembers when each started, for the age of the oldest one (`/metrics`). Shared by
/// every source of one pipeline; the high-water mark proves backpressure.
#[derive(Debug, Default)]
pub struct InFlight {
    current: AtomicUsize,
    high_water: AtomicUsize,
    next: AtomicU64,
    /// Start time of every open batch, by sequence number (so the first is the oldest).
    open: Mutex<BTreeMap<u64, Instant>>,
}

impl InFlight {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    fn inc(&self) -> u64 {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.high_water.fetch_max(now, Ordering::SeqCst);
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            open.insert(seq, Instant::now());
        }
        seq
    }
    fn dec(&self, seq: u64) {
        self.current.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            open.remove(&seq);
        }
    }
    /// Batches currently unacknowledged.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }
    /// The largest number of unacknowledged batches seen so far.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::SeqCst)
    }
    /// How long the oldest unacknowledged batch has been open (zero when none is).
    pub fn oldest_age(&self) -> Duration {
        self.open
            .lock()
            .ok()
            .and_then(|o| o.values().next().map(|t| t.elapsed()))
            .unwrap_or_default()
    }
}

struct Shared {
    status: AtomicU8,
    /// Why the first dead-lettered part was dead-lettered (PHI-free code).
    reason: Mutex<Option<ReasonCode>>,
    tx: Mutex<Option<oneshot::Sender<BatchOutcome>>>,
    in_flight: Option<(Arc<InFlight>, u64)>,
    /// Its shares of the pipeline's byte budget, returned when the batch settles.
    budget: Mutex<Vec<BudgetShare>>,
}

/// A pipeline's budget for the raw bytes of the inputs in flight (taken by a source before
/// it sends an input on, returned when the input's batch settles).
#[derive(Debug)]
pub struct ByteBudget {
    units: Arc<tokio::sync::Semaphore>,
    total_units: u32,
}

/// Bytes per unit of the budget (the semaphore counts units).
const BUDGET_UNIT: u64 = 1024;

/// A share of a [`ByteBudget`], returned when dropped.
#[derive(Debug)]
pub struct BudgetShare {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl ByteBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64) -> Arc<Self> {
        let total_units = bytes.div_ceil(BUDGET_UNIT).clamp(1, u32::MAX as u64) as u32;
        Arc::new(ByteBudget {
            units: Arc::new(tokio::sync::Semaphore::new(total_units as usize)),
            total_units,
        })
    }
    /// Waits until `bytes` fit in what is free. An input larger than the whole budget
    /// waits until the budget is entirely free and then goes alone.
    pub async fn take(&self, bytes: u64) -> BudgetShare {
        let units = self.units_for(bytes);
        let permit = self
            .units
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        BudgetShare { _permit: permit }
    }
    /// `bytes` from what is free now, or `None` without waiting.
    pub fn try_take(&self, bytes: u64) -> Option<BudgetShare> {
        let units = self.units_for(bytes);
        self.units
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(|permit| BudgetShare { _permit: permit })
    }
    /// The units `bytes` take: at least one, at most the whole budget.
    fn units_for(&self, bytes: u64) -> u32 {
        bytes
            .div_ceil(BUDGET_UNIT)
            .clamp(1, u64::from(self.total_units)) as u32
    }
    /// Bytes taken by the inputs in flight now (in whole units).
    pub fn in_use(&self) -> u64 {
        u64::from(self.total_units).saturating_sub(self.units.available_permits() as u64)
            * BUDGET_UNIT
    }
    /// The budget in bytes.
    pub fn total(&self) -> u64 {
        u64::from(self.total_units) * BUDGET_UNIT
    }
}

/// A batch's merged status and, when something was dead-lettered, the first reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub status: BatchStatus,
    pub reason: Option<ReasonCode>,
}

impl Shared {
    fn merge(&self, status: BatchStatus) {
        self.status.fetch_max(status as u8, Ordering::SeqCst);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let status = BatchStatus::from_u8(self.status.load(Ordering::SeqCst));
        let reason = self.reason.get_mut().ok().and_then(|r| *r);
        if let Some(tx) = self.tx.get_mut().ok().and_then(|t| t.take()) {
            // The receiver may be gone (source stopped); then nobody releases anything,
            // which is the safe direction.
            let _ = tx.send(BatchOutcome { status, reason });
        }
        if let Some((f, seq)) = &self.in_flight {
            f.dec(*seq);
        }
    }
}

/// Held by the source for one input; hands out tokens and yields the merged status.
pub struct BatchNotifier {
    shared: Arc<Shared>,
}

/// Resolves when every token of the batch is gone.
pub struct BatchReceiver {
    rx: oneshot::Receiver<BatchOutcome>,
}

impl BatchReceiver {
    /// Waits for the merged status. A vanished sender (cannot happen by construction) is
    /// reported as `Failed`, the safe direction.
    pub async fn wait(self) -> BatchStatus {
        self.wait_outcome().await.status
    }

    /// Waits for the merged status and the first dead-letter reason (a source that answers
    /// its peer per input, like MLLP, tells it why).
    pub async fn wait_outcome(self) -> BatchOutcome {
        self.rx.await.unwrap_or(BatchOutcome {
            status: BatchStatus::Failed,
            reason: None,
        })
    }
}

impl BatchNotifier {
    /// A new batch, counted in `in_flight` until its status resolves.
    pub fn new(in_flight: Option<Arc<InFlight>>) -> (Self, BatchReceiver) {
        let (tx, rx) = oneshot::channel();
        let in_flight = in_flight.map(|f| {
            let seq = f.inc();
            (f, seq)
        });
        let shared = Arc::new(Shared {
            status: AtomicU8::new(BatchStatus::Delivered as u8),
            reason: Mutex::new(None),
            tx: Mutex::new(Some(tx)),
            in_flight,
            budget: Mutex::new(Vec::new()),
        });
        (Self { shared }, BatchReceiver { rx })
    }

    /// A token for one envelope of this batch.
    pub fn token(&self) -> AckToken {
        AckToken {
            shared: Some(self.shared.clone()),
            settled: false,
        }
    }
}

/// One envelope's share of a batch acknowledgement. See the module docs for the contract.
pub struct AckToken {
    shared: Option<Arc<Shared>>,
    settled: bool,
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckToken")
            .field("attached", &self.shared.is_some())
            .finish()
    }
}

impl AckToken {
    /// A token attached to no batch (tests, tools). Resolving it does nothing.
    pub fn detached() -> Self {
        Self {
            shared: None,
            settled: true,
        }
    }

    /// A new token for an envelope derived from this one (a stage output, one message split
    /// out of a file). The batch stays open until the derived token resolves too.
    pub fn derive(&self) -> AckToken {
        AckToken {
            shared: self.shared.clone(),
            settled: false,
        }
    }

    /// Makes the batch hold `share` until it settles (every token of it resolved or dropped).
    pub fn hold(&self, share: BudgetShare) {
        if let Some(s) = &self.shared {
            if let Ok(mut b) = s.budget.lock() {
                b.push(share);
            }
        }
    }

    /// Whether the batch already holds a share of a byte budget (an input sent as several
    /// envelopes: the later ones must not wait for room the batch itself holds).
    pub fn holds_share(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.budget.lock().is_ok_and(|b| !b.is_empty()))
    }

    /// Marks this envelope's part as done with `status`.
    pub fn resolve(mut self, status: BatchStatus) {
        if let Some(s) = &self.shared {
            s.merge(status);
        }
        self.settled = true;
    }

    /// Marks this envelope's part as written to the dead-letter store for `reason`.
    pub fn dead_lettered(mut self, reason: ReasonCode) {
        if let Some(s) = &self.shared {
            if let Ok(mut r) = s.reason.lock() {
                r.get_or_insert(reason);
            }
            s.merge(BatchStatus::DeadLettered);
        }
        self.settled = true;
    }

    /// This envelope's responsibility has moved to derived tokens: neither success nor
    /// failure. Used by a stage after it emitted (or rejected) everything it made.
    pub fn hand_over(mut self) {
        self.settled = true;
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if !self.settled {
            if let Some(s) = &self.shared {
                s.merge(BatchStatus::Failed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_input_larger_than_the_byte_budget_waits_for_all_of_it_and_goes_alone() {
        use futures::FutureExt;
        let budget = ByteBudget::new(4 * 1024);
        let small = budget.take(1).await;
        assert!(
            budget.take(100 * 1024).now_or_never().is_none(),
            "the large one waits while anything is in flight"
        );
        drop(small);
        let large = budget
            .take(100 * 1024)
            .now_or_never()
            .expect("alone, it goes");
        assert_eq!(budget.in_use(), budget.total());
        assert!(
            budget.take(1).now_or_never().is_none(),
            "and nothing beside it"
        );
        drop(large);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn the_envelopes_of_one_input_are_never_stopped_by_their_own_batchs_share() {
        let budget = ByteBudget::new(4 * 1024);
        let (n, _rx) = BatchNotifier::new(None);
        let first = n.token();
        assert!(!first.holds_share());
        first.hold(budget.take(4 * 1024).await);
        let second = n.token();
        assert!(
            second.holds_share(),
            "the batch's later envelopes see its share"
        );
        assert!(
            budget.try_take(1).is_none(),
            "and take nothing that is not free"
        );
        drop((first, second, n));
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_batch_returns_its_byte_share_when_its_last_token_settles() {
        let budget = ByteBudget::new(8 * 1024);
        let (n, rx) = BatchNotifier::new(None);
        let token = n.token();
        token.hold(budget.take(5 * 1024).await);
        let derived = token.derive();
        drop(n);
        token.hand_over();
        assert_eq!(
            budget.in_use(),
            5 * 1024,
            "held while a derived token is open"
        );
        derived.resolve(BatchStatus::Delivered);
        assert_eq!(rx.wait().await, BatchStatus::Delivered);
        assert_eq!(budget.in_use(), 0);
    }
    use proptest::prelude::*;

    #[tokio::test]
    async fn batch_resolves_only_after_every_token_is_gone() {
        let (n, rx) = BatchNotifier::new(None);
        let a = n.token();
        let b = n.token();
        drop(n);
        a.resolve(BatchStatus::Delivered);
        let mut rx = Box::pin(rx.wait());
        assert!(futures::poll!(&mut rx).is_pending());
        b.resolve(BatchStatus::Delivered);
        assert_eq!(rx.await, BatchStatus::Delivered);
    }

    #[tokio::test]
    async fn dropped_unresolved_token_fails_the_batch() {
        let (n, rx) = BatchNotifier::new(None);
        let a = n.token();
        let b = n.token();
        drop(n);
        a.resolve(BatchStatus::Delivered);
        drop(b);
        assert_eq!(rx.wait().await, BatchStatus::Failed);
    }

    #[tokio::test]
    async fn handed_over_token_waits_for_derived_tokens() {
        let (n, rx) = BatchNotifier::new(None);
        let parent = n.token();
        drop(n);
        let d1 = parent.derive();
        let d2 = parent.derive();
        parent.hand_over();
        d1.resolve(BatchStatus::DeadLettered);
        d2.resolve(BatchStatus::Delivered);
        assert_eq!(rx.wait().await, BatchStatus::DeadLettered);
    }

    #[tokio::test]
    async fn the_first_dead_letter_reason_reaches_the_source() {
        let (n, rx) = BatchNotifier::new(None);
        let (a, b, c) = (n.token(), n.token(), n.token());
        drop(n);
        a.resolve(BatchStatus::Delivered);
        b.dead_lettered(ReasonCode::MissingSegment);
        c.dead_lettered(ReasonCode::TooLarge);
        let out = rx.wait_outcome().await;
        assert_eq!(out.status, BatchStatus::DeadLettered);
        assert_eq!(out.reason, Some(ReasonCode::MissingSegment));
        let (n, rx) = BatchNotifier::new(None);
        n.token().resolve(BatchStatus::Delivered);
        drop(n);
        assert_eq!(
            rx.wait_outcome().await,
            BatchOutcome {
                status: BatchStatus::Delivered,
                reason: None
            }
        );
    }

    #[tokio::test]
    async fn in_flight_counts_open_batches() {
        let f = InFlight::new();
        let (n1, _r1) = BatchNotifier::new(Some(f.clone()));
        let (n2, _r2) = BatchNotifier::new(Some(f.clone()));
        assert_eq!(f.current(), 2);
        drop(n1);
        assert_eq!(f.current(), 1);
        drop(n2);
        assert_eq!(f.current(), 0);
        assert_eq!(f.high_water(), 2);
    }

    #[test]
    fn the_oldest_open_batch_gives_the_age_until_it_resolves() {
        let f = InFlight::new();
        assert_eq!(f.oldest_age(), Duration::ZERO);
        let (first, _r1) = BatchNotifier::new(Some(f.clone()));
        std::thread::sleep(Duration::from_millis(30));
        let (second, _r2) = BatchNotifier::new(Some(f.clone()));
        assert!(f.oldest_age() >= Duration::from_millis(30));
        drop(first);
        // Only the younger batch is open now.
        assert!(f.oldest_age() < Duration::from_millis(30));
        drop(second);
        assert_eq!(f.oldest_age(), Duration::ZERO);
    }

    fn status_strategy() -> impl Strategy<Value = BatchStatus> {
        prop_oneof![
            Just(BatchStatus::Delivered),
            Just(BatchStatus::DeadLettered),
            Just(BatchStatus::Failed)
        ]
    }

    proptest! {
        #[test]
        fn merged_status_is_the_worst_in_any_order(
            statuses in proptest::collection::vec(status_strategy(), 1..12),
            order in any::<u64>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let expected = *statuses.iter().max().unwrap();
            let got = rt.block_on(async {
                let (n, rx) = BatchNotifier::new(None);
                let mut tokens: Vec<_> = statuses.iter().map(|s| (n.token(), *s)).collect();
                drop(n);
                // a deterministic shuffle driven by `order`
                let len = tokens.len();
                for i in 0..len {
                    let j = ((order >> (i % 64)) as usize + i * 7) % len;
                    tokens.swap(i, j);
                }
                for (t, s) in tokens { t.resolve(s); }
                rx.wait().await
            });
            prop_assert_eq!(got, expected);
        }
    }
}

//! Connection limits shared by the daemon's listeners (the MLLP source and the HTTP ops
//! endpoint), and the process's open-file limit.
//!
//! **Why a plain semaphore is not enough.** A listener that stops accepting when its slots
//! are taken lets a handful of silent or trickling peers hold every slot for as long as
//! their timeouts allow, while a legitimate sender waits in the kernel's backlog. So a
//! listener here always accepts, and then decides with [`Slots::admit`]:
//!
//! 1. **Per-peer cap.** A peer (source IP address) at its cap gets a new connection only in
//!    place of one of its own: its longest-idle one, else its longest-running unfinished
//!    receive (see 3). Otherwise the new connection is closed at once. One host cannot take
//!    more than its share, and a host that reconnects (its old connection half-open behind a
//!    NAT) is not locked out by itself.
//! 2. **Overall cap.** At the overall cap a connection of a peer holding *more* connections
//!    than the newcomer's peer (or one of the newcomer's own) gives way: the heaviest such
//!    peer's, its idle ones before its unfinished receives, the longest idle first. A host
//!    with no connection gets in while another host holds an evictable one, and a host
//!    trickling many connections loses them before a host keeping one idle connection.
//! 3. **What can be evicted.** A connection waiting for its peer to start something (an MLLP
//!    frame, an HTTP request head), or one whose receive has been running for at least
//!    `slow_after` (a real frame arrives in well under a second; a trickling one does not).
//!    Never one whose message is being handled: that would leave a delivered message
//!    unanswered.
//! 4. **Refused.** When nothing can be evicted, the new connection is closed immediately
//!    instead of waiting in the backlog, so that the backlog and file descriptors stay free.
//!
//! Evictions and refusals are counted by the listener (`oscarflow_listener_connections_closed_total`)
//! and logged at most once a minute, with counts only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all peers together.
    pub max_total: usize,
    /// Connections open at once from one IP address (capped by `max_total`).
    pub max_per_peer: usize,
    /// An unfinished receive may be evicted once it has run this long.
    pub slow_after: Duration,
}

/// Why a connection was closed by the limits (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A new connection was refused: the overall cap was reached and nothing could give way.
    OverCapacity,
    /// A new connection was refused: its peer is at its cap with nothing to give way.
    PeerOverCapacity,
    /// An idle connection gave way to a new one.
    EvictedIdle,
    /// A connection with a long-running unfinished receive gave way to a new one.
    EvictedSlow,
}

impl Closed {
    pub const fn as_str(self) -> &'static str {
        match self {
            Closed::OverCapacity => "over_capacity",
            Closed::PeerOverCapacity => "peer_over_capacity",
            Closed::EvictedIdle => "evicted_idle",
            Closed::EvictedSlow => "evicted_slow",
        }
    }
}

#[derive(Debug)]
struct Entry {
    peer: IpAddr,
    /// Last time the connection finished something (connected, answered).
    idle_since: Instant,
    /// When the receive in progress (a frame, a request head) started.
    receiving_since: Option<Instant>,
    /// Messages or requests being handled.
    busy: u32,
    evict: Arc<Notify>,
}

impl Entry {
    /// `(is a receive, since)`, if this connection may be evicted at `now`.
    fn evictable(&self, now: Instant, slow_after: Duration) -> Option<(bool, Instant)> {
        if self.busy > 0 {
            return None;
        }
        match self.receiving_since {
            None => Some((false, self.idle_since)),
            Some(s) if now.saturating_duration_since(s) >= slow_after => Some((true, s)),
            Some(_) => None,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
}

/// What [`Slots::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Admit,
    Evict(u64, Closed),
    Refuse(Closed),
}

fn decide(inner: &Inner, peer: IpAddr, limits: &Limits, now: Instant) -> Decision {
    let max_total = limits.max_total.max(1);
    let max_per_peer = limits.max_per_peer.clamp(1, max_total);
    let mut per_peer: HashMap<IpAddr, usize> = HashMap::new();
    for e in inner.conns.values() {
        *per_peer.entry(e.peer).or_default() += 1;
    }
    let mine = per_peer.get(&peer).copied().unwrap_or(0);
    // At its own cap a peer can only replace one of its own connections.
    let (own_only, refusal) = if mine >= max_per_peer {
        (true, Closed::PeerOverCapacity)
    } else if inner.conns.len() >= max_total {
        (false, Closed::OverCapacity)
    } else {
        return Decision::Admit;
    };
    let eligible = |e: &Entry| e.peer == peer || (!own_only && per_peer[&e.peer] > mine);
    // The heaviest peer first; its idle connections before its receiving ones; the longest
    // idle (or the longest-running receive) first.
    let victim = inner
        .conns
        .iter()
        .filter(|(_, e)| eligible(e))
        .filter_map(|(id, e)| {
            let (receiving, since) = e.evictable(now, limits.slow_after)?;
            Some((
                (std::cmp::Reverse(per_peer[&e.peer]), receiving, since, *id),
                *id,
            ))
        })
        .min_by(|a, b| a.0.cmp(&b.0));
    match victim {
        Some(((_, receiving, ..), id)) => Decision::Evict(
            id,
            if receiving {
                Closed::EvictedSlow
            } else {
                Closed::EvictedIdle
            },
        ),
        None => Decision::Refuse(refusal),
    }
}

/// The connections of one listener.
#[derive(Debug, Clone)]
pub struct Slots {
    inner: Arc<Mutex<Inner>>,
    limits: Limits,
}

/// What happened to a new connection.
#[derive(Debug)]
pub enum Admission {
    /// It may be served; `evicted` says whether another connection gave way for it.
    Admitted { slot: Slot, evicted: Option<Closed> },
    /// It must be closed at once.
    Refused(Closed),
}

impl Slots {
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::default(),
            limits,
        }
    }

    /// Decides about a new connection from `peer` (see the module documentation).
    pub fn admit(&self, peer: IpAddr) -> Admission {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let evicted = match decide(&inner, peer, &self.limits, now) {
            Decision::Refuse(why) => return Admission::Refused(why),
            Decision::Admit => None,
            Decision::Evict(id, why) => {
                if let Some(e) = inner.conns.remove(&id) {
                    e.evict.notify_one();
                }
                Some(why)
            }
        };
        inner.next_id += 1;
        let id = inner.next_id;
        let evict = Arc::new(Notify::new());
        inner.conns.insert(
            id,
            Entry {
                peer,
                idle_since: now,
                receiving_since: None,
                busy: 0,
                evict: evict.clone(),
            },
        );
        Admission::Admitted {
            slot: Slot {
                id,
                inner: self.inner.clone(),
                evict,
            },
            evicted,
        }
    }

    /// Connections currently holding a slot.
    pub fn open(&self) -> usize {
        self.inner.lock().map(|i| i.conns.len()).unwrap_or(0)
    }
}

/// One admitted connection's slot; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    inner: Arc<Mutex<Inner>>,
    evict: Arc<Notify>,
}

impl Slot {
    fn with(&self, f: impl FnOnce(&mut Entry)) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.conns.get_mut(&self.id) {
            f(e);
        }
    }

    /// The peer started (`Some(start)`) or is not in the middle of (`None`) a receive.
    pub fn receiving(&self, since: Option<Instant>) {
        self.with(|e| e.receiving_since = since);
    }

    /// Marks the connection busy (not evictable) until the guard is dropped.
    pub fn busy(&self) -> BusyGuard {
        self.with(|e| e.busy += 1);
        BusyGuard {
            id: self.id,
            inner: self.inner.clone(),
        }
    }

    /// Whether a message or request is being handled on this connection.
    pub fn is_busy(&self) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.conns.get(&self.id).is_some_and(|e| e.busy > 0)
    }

    /// Resolves when this connection was chosen to give way to a new one.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.conns.remove(&self.id);
    }
}

/// Holds a connection busy; see [`Slot::busy`].
#[derive(Debug)]
pub struct BusyGuard {
    id: u64,
    inner: Arc<Mutex<Inner>>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.conns.get_mut(&self.id) {
            e.busy = e.busy.saturating_sub(1);
            e.idle_since = Instant::now();
        }
    }
}

/// Counts closings and logs them at most once a minute (counts only, no addresses).
#[derive(Debug)]
pub struct ClosedLog {
    listener: &'static str,
    last: Mutex<(Option<Instant>, HashMap<&'static str, u64>)>,
}

impl ClosedLog {
    pub fn new(listener: &'static str) -> Self {
        Self {
            listener,
            last: Mutex::new((None, HashMap::new())),
        }
    }

    /// Notes one closing; logs the counts since the last line when a minute has passed.
    pub fn note(&self, why: &'static str) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last.1.entry(why).or_default() += 1;
        if last
            .0
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        let mut counts: Vec<_> = last.1.drain().collect();
        counts.sort();
        last.0 = Some(Instant::now());
        let counts = counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::warn!(listener = self.listener, %counts, "Connections closed by the listener's limits (counts since the last such line, at most one a minute).");
    }
}

/// Raises this process's soft limit on open files to its hard limit, so that many idle
/// clients exhaust the listeners' caps, not the process's descriptors. Returns the
/// `(soft, hard)` limits in force afterwards.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every Unix.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim = wanted;
        }
        Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
    }
}

/// Elsewhere: nothing to raise.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    Ok((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = Duration::from_secs(2);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn slots(total: usize, per_peer: usize) -> Slots {
        Slots::new(Limits {
            max_total: total,
            max_per_peer: per_peer,
            slow_after: SLOW,
        })
    }

    fn admitted(a: Admission) -> (Slot, Option<Closed>) {
        match a {
            Admission::Admitted { slot, evicted } => (slot, evicted),
            Admission::Refused(why) => panic!("refused: {why:?}"),
        }
    }

    /// Backdates a slot's receive so that it counts as slow.
    fn slow_receive(s: &Slot) {
        s.receiving(Some(Instant::now() - SLOW - Duration::from_millis(1)));
    }

    #[test]
    fn under_the_caps_every_connection_is_admitted_and_a_dropped_slot_is_freed() {
        let s = slots(3, 2);
        let (a, ev) = admitted(s.admit(ip(1)));
        assert_eq!(ev, None);
        let (_b, _) = admitted(s.admit(ip(1)));
        let (_c, _) = admitted(s.admit(ip(2)));
        assert_eq!(s.open(), 3);
        drop(a);
        assert_eq!(s.open(), 2);
    }

    #[test]
    fn a_peer_at_its_cap_replaces_its_longest_idle_connection_but_never_a_busy_one() {
        let s = slots(10, 2);
        let (first, _) = admitted(s.admit(ip(2)));
        let (second, _) = admitted(s.admit(ip(2)));
        let (third, ev) = admitted(s.admit(ip(2)));
        assert_eq!(ev, Some(Closed::EvictedIdle));
        // The first one (longest idle) gave way and was told so.
        assert!(futures::FutureExt::now_or_never(first.evicted()).is_some());
        assert!(futures::FutureExt::now_or_never(second.evicted()).is_none());
        let _g2 = second.busy();
        let _g3 = third.busy();
        assert!(matches!(
            s.admit(ip(2)),
            Admission::Refused(Closed::PeerOverCapacity)
        ));
        // Another peer is not affected.
        admitted(s.admit(ip(3)));
    }

    #[test]
    fn a_fresh_receive_is_kept_and_a_slow_one_gives_way() {
        let s = slots(10, 2);
        let (a, _) = admitted(s.admit(ip(2)));
        let (b, _) = admitted(s.admit(ip(2)));
        a.receiving(Some(Instant::now()));
        b.receiving(Some(Instant::now()));
        assert!(matches!(
            s.admit(ip(2)),
            Admission::Refused(Closed::PeerOverCapacity)
        ));
        slow_receive(&b);
        let (_c, ev) = admitted(s.admit(ip(2)));
        assert_eq!(ev, Some(Closed::EvictedSlow));
        assert!(futures::FutureExt::now_or_never(b.evicted()).is_some());
    }

    #[test]
    fn at_the_overall_cap_a_new_peer_takes_a_slot_from_the_heaviest_peer() {
        let s = slots(4, 4);
        // One peer holds every slot, all trickling slowly.
        let hog: Vec<Slot> = (0..4).map(|_| admitted(s.admit(ip(2))).0).collect();
        for h in &hog {
            slow_receive(h);
        }
        let (newcomer, ev) = admitted(s.admit(ip(1)));
        assert_eq!(ev, Some(Closed::EvictedSlow));
        let _busy = newcomer.busy();
        // Two peers: the newcomer's peer (1 connection) takes from the hog (3) again…
        let (_n2, ev) = admitted(s.admit(ip(1)));
        assert_eq!(ev, Some(Closed::EvictedSlow));
        // …and the hog, now with 2 against 2, cannot take the newcomer's busy one back; it
        // can replace only one of its own.
        let (_h, ev) = admitted(s.admit(ip(2)));
        assert_eq!(ev, Some(Closed::EvictedSlow));
        assert_eq!(s.open(), 4);
    }

    #[test]
    fn a_heavy_address_loses_a_slow_receive_before_a_light_one_loses_its_idle_connection() {
        let s = slots(4, 4);
        let (engine, _) = admitted(s.admit(ip(3)));
        let hog: Vec<Slot> = (0..3).map(|_| admitted(s.admit(ip(2))).0).collect();
        for h in &hog {
            slow_receive(h);
        }
        let (_n, ev) = admitted(s.admit(ip(9)));
        assert_eq!(ev, Some(Closed::EvictedSlow));
        assert!(futures::FutureExt::now_or_never(engine.evicted()).is_none());
    }

    #[test]
    fn the_heaviest_address_gives_way_first_and_its_idle_connections_before_receiving_ones() {
        let s = slots(4, 4);
        let (recv, _) = admitted(s.admit(ip(2)));
        slow_receive(&recv);
        let (_idle_light, _) = admitted(s.admit(ip(3)));
        let (idle_heavy1, _) = admitted(s.admit(ip(4)));
        let (_idle_heavy2, _) = admitted(s.admit(ip(4)));
        let (_n, ev) = admitted(s.admit(ip(1)));
        assert_eq!(ev, Some(Closed::EvictedIdle));
        assert!(futures::FutureExt::now_or_never(idle_heavy1.evicted()).is_some());
        assert!(futures::FutureExt::now_or_never(recv.evicted()).is_none());
    }

    #[test]
    fn when_nothing_can_give_way_the_new_connection_is_refused() {
        let s = slots(2, 2);
        let (a, _) = admitted(s.admit(ip(2)));
        let (b, _) = admitted(s.admit(ip(3)));
        let _ga = a.busy();
        b.receiving(Some(Instant::now()));
        assert!(matches!(
            s.admit(ip(1)),
            Admission::Refused(Closed::OverCapacity)
        ));
    }

    #[test]
    fn a_busy_connection_becomes_idle_when_its_guard_is_dropped() {
        let s = slots(1, 1);
        let (a, _) = admitted(s.admit(ip(1)));
        let g = a.busy();
        assert!(a.is_busy());
        assert!(matches!(s.admit(ip(1)), Admission::Refused(_)));
        drop(g);
        assert!(!a.is_busy());
        let (_b, ev) = admitted(s.admit(ip(1)));
        assert_eq!(ev, Some(Closed::EvictedIdle));
    }
}

//! Labels that follow a task: every CPU sample carries the label set of
//! whatever the interrupted thread was running, whichever worker runs it.
//!
//! A label set is a list of `key=value` pairs, interned once (outside any
//! signal handler) into an immutable set with a small id. A thread-local
//! slot holds the id of the set the thread runs under now; the sampler's
//! signal handler reads only that slot. Whoever polls labelled work sets
//! the slot for the poll and restores the previous id after it:
//! - [`scope`] for any future (and [`with`] for a closure);
//! - the route layer ([`Agent::route_metrics_layer`](crate::Agent::route_metrics_layer)):
//!   `route=<matched path>`;
//! - task groups ([`Agent::task_group`](crate::Agent::task_group)):
//!   `task_group=<name>`;
//! - with the `tracing` feature, [`TracingLayer`]: chosen span fields.
//!
//! They compose: each adds its pairs to the set current when its future is
//! polled (a key it repeats takes the inner value), so a request under
//! tower-http's span and the route layer carries `method` and `route`, and
//! the outer set applies again after the inner poll. The combined set is
//! interned once per (outer set, own set) pair and remembered both in the
//! wrapper and in a table shared by all wrappers, so a poll under an outer
//! set it has seen costs what a bare one does: a thread-local read and
//! compare. Tasks spawned inside a scope do not inherit it (tokio has no
//! spawn hook for that): carry it over with [`spawn`], or
//! `scope(current(), fut)`.
//!
//! The table holds at most [`MAX_SETS`] sets, since values such as trace ids
//! are unbounded: past it, new sets all become the one set `labels=other`,
//! and `profscope_label_sets_overflow_total` on `/metrics` counts them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use std::task::{Context, Poll};

cfg_own_sampler! {
    use crate::capture::sampler::LABEL_SET;
}
cfg_not_own_sampler! {
    thread_local! {
        static LABEL_SET: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
}

/// Most label sets interned; past it, new sets are `labels=other`.
pub const MAX_SETS: usize = 4096;

/// The id of the empty set.
const EMPTY: u32 = 0;
/// The id of the overflow set.
const OTHER: u32 = 1;

/// An interned, immutable set of `key=value` pairs, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet {
    id: u32,
    pairs: Arc<[(String, String)]>,
}

struct Table {
    ids: HashMap<Arc<[(String, String)]>, u32>,
    sets: Vec<Arc<[(String, String)]>>,
}

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(|| {
    let empty: Arc<[(String, String)]> = Arc::from(Vec::new());
    let other: Arc<[(String, String)]> = Arc::from(vec![("labels".into(), "other".into())]);
    RwLock::new(Table {
        ids: HashMap::from([(empty.clone(), EMPTY), (other.clone(), OTHER)]),
        sets: vec![empty, other],
    })
});

static OVERFLOW: AtomicU64 = AtomicU64::new(0);

/// (outer set, own set) → the outer set plus the own pairs. Shared by every
/// wrapper so that only the first request of a route under a given outer
/// set interns anything.
static COMPOSED: LazyLock<RwLock<HashMap<(u32, u32), u32>>> = LazyLock::new(Default::default);

/// Most pairs `COMPOSED` remembers; past it combinations are still right,
/// only interned again by each new wrapper (ids are bounded by [`MAX_SETS`],
/// so this is reached only by services far past the set cap).
const MAX_COMPOSED: usize = 4 * MAX_SETS;

impl LabelSet {
    /// Interns `pairs` (later pairs win for a repeated key).
    pub fn new<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> LabelSet
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut sorted: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (k.into(), v.into());
            match sorted.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => sorted.push((k, v)),
            }
        }
        sorted.sort();
        intern(sorted)
    }

    /// The empty set.
    pub fn empty() -> LabelSet {
        by_id(EMPTY)
    }

    /// This set with `pairs` added (theirs win for a repeated key).
    pub fn with<K, V>(&self, pairs: impl IntoIterator<Item = (K, V)>) -> LabelSet
    where
        K: Into<String>,
        V: Into<String>,
    {
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        if pairs.is_empty() {
            return self.clone();
        }
        LabelSet::new(self.pairs.iter().cloned().chain(pairs))
    }

    /// The pairs, sorted by key.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The set's id (what samples carry).
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}

fn intern(pairs: Vec<(String, String)>) -> LabelSet {
    if let Some(&id) = TABLE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .ids
        .get(pairs.as_slice())
    {
        return by_id(id);
    }
    let mut table = TABLE.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(&id) = table.ids.get(pairs.as_slice()) {
        let pairs = table.sets[id as usize].clone();
        return LabelSet { id, pairs };
    }
    if table.sets.len() >= MAX_SETS {
        OVERFLOW.fetch_add(1, Ordering::Relaxed);
        let pairs = table.sets[OTHER as usize].clone();
        return LabelSet { id: OTHER, pairs };
    }
    let id = table.sets.len() as u32;
    let pairs: Arc<[(String, String)]> = Arc::from(pairs);
    table.sets.push(pairs.clone());
    table.ids.insert(pairs.clone(), id);
    LabelSet { id, pairs }
}

pub(crate) fn by_id(id: u32) -> LabelSet {
    let table = TABLE.read().unwrap_or_else(PoisonError::into_inner);
    let pairs = table
        .sets
        .get(id as usize)
        .cloned()
        .unwrap_or_else(|| table.sets[EMPTY as usize].clone());
    LabelSet { id, pairs }
}

/// The pairs of the set with id `id` (what a sample carries), if any.
pub(crate) fn pairs_of(id: u32) -> Option<Arc<[(String, String)]>> {
    if id == EMPTY {
        return None;
    }
    TABLE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .sets
        .get(id as usize)
        .cloned()
}

/// Sets interned so far, and sets mapped to `labels=other` past the cap.
pub(crate) fn table_size() -> (usize, u64) {
    let sets = TABLE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .sets
        .len();
    (sets, OVERFLOW.load(Ordering::Relaxed))
}

/// The id of `outer` plus the pairs of `own` (`own`'s value wins for a key
/// both have).
pub(crate) fn compose(outer: u32, own: u32) -> u32 {
    if outer == EMPTY || outer == own {
        return own;
    }
    if own == EMPTY {
        return outer;
    }
    if let Some(&id) = COMPOSED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&(outer, own))
    {
        return id;
    }
    let combined = by_id(outer).with(by_id(own).pairs().iter().cloned()).id;
    let mut memo = COMPOSED.write().unwrap_or_else(PoisonError::into_inner);
    if memo.len() < MAX_COMPOSED {
        memo.insert((outer, own), combined);
    }
    combined
}

/// The set this thread runs under now.
pub fn current() -> LabelSet {
    by_id(current_id())
}

pub(crate) fn current_id() -> u32 {
    LABEL_SET.with(std::cell::Cell::get)
}

cfg_tracing! {
    mod tracing;
    pub use self::tracing::TracingLayer;
}

/// Sets the slot to `id` until the guard drops (panics included); holds
/// the id it replaced.
///
/// The slot is read by the sampler's signal handler on this same thread,
/// which the compiler does not know about: compiler fences keep the set
/// before the labelled work and the restore after it, however much of
/// the poll is inlined around them.
#[derive(Debug)]
pub(crate) struct Enter(pub(crate) u32);

impl Enter {
    #[inline]
    pub(crate) fn new(id: u32) -> Enter {
        let previous = LABEL_SET.with(|slot| slot.replace(id));
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        Enter(previous)
    }
}

impl Drop for Enter {
    #[inline]
    fn drop(&mut self) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        LABEL_SET.with(|slot| slot.set(self.0));
    }
}

/// The label of the agent's own work, which the viewer hides by default.
pub(crate) const AGENT_PAIR: (&str, &str) = ("profscope", "agent");

/// The label set of the agent's own work (`profscope=agent`): its threads
/// enter it, so their allocations carry it and the viewer can hide them.
pub(crate) fn agent_set() -> u32 {
    static SET: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SET.get_or_init(|| LabelSet::new([AGENT_PAIR]).id)
}

/// Enters [`agent_set`] on this thread until the guard drops.
pub(crate) fn agent_scope() -> Enter {
    Enter::new(agent_set())
}

/// Runs `f` under the current labels plus `pairs`.
pub fn with<K, V, R>(pairs: impl IntoIterator<Item = (K, V)>, f: impl FnOnce() -> R) -> R
where
    K: Into<String>,
    V: Into<String>,
{
    let set = current().with(pairs);
    let _enter = Enter::new(set.id);
    f()
}

/// `fut` with `pairs` added to the labels current at each of its polls, on
/// whatever thread polls it; the previous set is restored after each poll.
///
/// ```
/// # async fn run() {
/// use profscope_agent::labels;
/// let checkout = labels::scope([("route", "/checkout")], async {
///     // CPU samples taken here carry route=/checkout.
///     assert_eq!(labels::current().get("route"), Some("/checkout"));
/// });
/// checkout.await;
/// assert_eq!(labels::current().get("route"), None);
/// # }
/// ```
pub fn scope<K, V, F>(pairs: impl IntoIterator<Item = (K, V)>, fut: F) -> Scoped<F>
where
    K: Into<String>,
    V: Into<String>,
    F: Future,
{
    Scoped::new(LabelSet::new(pairs), fut)
}

/// Spawns `fut` on the current tokio runtime under the labels of the
/// spawning code (tasks do not inherit them otherwise).
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(Scoped::new(current(), fut))
}

pin_project_lite::pin_project! {
    /// A future polled with a label set added to the current one; see
    /// [`scope`].
    #[derive(Debug)]
    pub struct Scoped<F> {
        own: u32,
        // (outer set id, combined set id) of the last poll.
        cached: (u32, u32),
        #[pin]
        inner: F,
    }
}

impl<F> Scoped<F> {
    /// `inner` polled with `set` added to the labels current at each poll.
    pub fn new(set: LabelSet, inner: F) -> Scoped<F> {
        Scoped {
            own: set.id(),
            cached: (EMPTY, set.id()),
            inner,
        }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The watchdog's stamp: the outermost wrapper marks the poll.
        let _stamp = crate::capture::poll_stamp::Stamp::enter();
        let outer = current_id();
        if outer != this.cached.0 {
            *this.cached = (outer, compose(outer, *this.own));
        }
        let _enter = Enter::new(this.cached.1);
        this.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_by_content_and_ordered() {
        let a = LabelSet::new([("route", "/a"), ("tenant", "x")]);
        let b = LabelSet::new([("tenant", "x"), ("route", "/a")]);
        assert_eq!(a, b);
        assert_eq!(a.get("tenant"), Some("x"));
        assert_eq!(a.with([("tenant", "y")]).get("tenant"), Some("y"));
        assert_eq!(LabelSet::empty().id(), EMPTY);
        assert_eq!(pairs_of(a.id()).unwrap()[0].0, "route");
    }

    #[test]
    fn scoped_adds_to_the_set_current_at_each_poll() {
        use std::task::Waker;
        let own = LabelSet::new([("route", "/x"), ("k", "inner")]);
        let mut fut = std::pin::pin!(Scoped::new(
            own.clone(),
            std::future::poll_fn(|_| Poll::Ready(current()))
        ));
        let mut cx = Context::from_waker(Waker::noop());
        let outer = LabelSet::new([("method", "GET"), ("k", "outer")]);
        let seen = with(outer.pairs().iter().cloned(), || fut.as_mut().poll(&mut cx));
        let Poll::Ready(seen) = seen else {
            panic!("ready")
        };
        assert_eq!(seen.get("method"), Some("GET"));
        assert_eq!(seen.get("route"), Some("/x"));
        assert_eq!(seen.get("k"), Some("inner"), "the inner key wins");
        assert_eq!(current().id(), EMPTY, "restored");
        // Remembered for every wrapper of the same sets.
        assert_eq!(compose(outer.id(), own.id()), seen.id());
        assert_eq!(compose(EMPTY, own.id()), own.id());
        assert_eq!(compose(outer.id(), EMPTY), outer.id());
    }

    #[test]
    fn with_nests_and_restores() {
        assert_eq!(current().id(), EMPTY);
        with([("outer", "1")], || {
            assert_eq!(current().get("outer"), Some("1"));
            with([("inner", "2")], || {
                let here = current();
                assert_eq!(
                    (here.get("outer"), here.get("inner")),
                    (Some("1"), Some("2"))
                );
            });
            assert_eq!(current().get("inner"), None);
            assert_eq!(current().get("outer"), Some("1"));
        });
        assert_eq!(current().id(), EMPTY);
    }
}

//! The accept loop: every connection is served by hyper-util's connection builder with a timer,
//! so that a client gets `header_read_timeout` to send each request head, a connection with no
//! request in progress closes after `keep_alive_idle`, and at most `max_connections` sockets are
//! open at once. Each socket is wrapped so that hyper's own empty answers to requests it cannot
//! parse go out as JSON (`parse_errors`).
//!
//! The cap is enforced at accept time: the loop accepts only while it holds one of
//! `max_connections` slots, and a slot is freed only once its socket is closed. When none is
//! free, the connection that has been idle (no request in progress) the longest is closed to make
//! room; when every connection has a request in progress, new connections wait in the kernel's
//! backlog until one finishes. So a flood of half-sent requests can neither exhaust the
//! process's file descriptors nor keep a real client out: its connection is the newest, and the
//! half-open ones are older.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::config::Settings;
use crate::parse_errors::{Refusals, Rewriting};

/// File descriptors kept back from the connection cap for the database, image files, bulk
/// reads, the audit log and the runtime itself.
const RESERVED_FDS: u64 = 128;
/// How often idle connections are looked for.
const REAP_EVERY: Duration = Duration::from_millis(250);
/// How long to wait for an evicted connection's slot before looking for another idle one.
const EVICT_RETRY: Duration = Duration::from_millis(50);
/// After an accept error (out of descriptors, say), how long to wait before the next accept, so
/// that the loop does not spin on an error that persists.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How connections are limited.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_idle: Duration,
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The limits `settings` configure.
    pub fn of(settings: &Settings) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(settings.header_read_timeout_secs),
            keep_alive_idle: Duration::from_secs(settings.keep_alive_idle_secs),
            max_connections: settings.max_connections,
        }
    }
}

/// The connection cap the process's file limit allows: `wanted`, or less when the soft
/// `RLIMIT_NOFILE` (raised to the hard limit first) leaves fewer descriptors than that beyond
/// [`RESERVED_FDS`].
pub fn effective_max_connections(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    // Raising the soft limit to the hard one is what every server needs and what Go's runtime
    // does by itself; the hard limit is the operator's decision.
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(e) => tracing::debug!(error = %e, "could not raise the soft file limit"),
        }
    }
    match limit.current {
        None => wanted,
        Some(files) => {
            let allowed = usize::try_from(files.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX).max(1);
            if allowed < wanted {
                tracing::warn!(
                    max_connections = wanted,
                    file_limit = files,
                    effective = allowed,
                    "the process's file limit allows fewer connections than max_connections; raise `ulimit -n`"
                );
            }
            wanted.min(allowed)
        }
    }
}

/// One open connection, as the cap and the idle timer see it.
struct Tracked {
    /// Requests being handled now.
    in_flight: AtomicUsize,
    /// Milliseconds since the server started at which the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Whether a request has completed on it (before that, hyper's header timer applies).
    served: AtomicBool,
    /// Told to close: evicted to make room, or idle too long.
    close: Notify,
}

impl Tracked {
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Counts a request in flight on its connection until dropped, also when the handler's future is
/// dropped half-way.
struct InFlight {
    conn: Arc<Tracked>,
    clock: Instant,
}

impl InFlight {
    fn begin(conn: Arc<Tracked>, clock: Instant) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { conn, clock }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.idle_since_ms.store(elapsed_ms(self.clock), Ordering::Release);
        self.conn.served.store(true, Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The open connections.
struct Registry {
    clock: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
}

impl Registry {
    fn new() -> Self {
        Self { clock: Instant::now(), next_id: AtomicU64::new(0), open: Mutex::new(HashMap::new()) }
    }

    /// Registers a new connection.
    fn admit(&self) -> (u64, Arc<Tracked>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Tracked {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(elapsed_ms(self.clock)),
            served: AtomicBool::new(false),
            close: Notify::new(),
        });
        self.open.lock().insert(id, conn.clone());
        (id, conn)
    }

    /// Tells the connection idle the longest to close; `false` when every connection has a
    /// request in progress.
    fn evict_longest_idle(&self) -> bool {
        let mut open = self.open.lock();
        let oldest_idle = open
            .iter()
            .filter(|(_, c)| c.is_idle())
            .min_by_key(|(_, c)| c.idle_since_ms.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        match oldest_idle.and_then(|id| open.remove(&id)) {
            Some(evicted) => {
                evicted.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64) {
        self.open.lock().remove(&id);
    }

    /// Tells connections idle for longer than `keep_alive_idle` after a request to close.
    fn reap(&self, keep_alive_idle: Duration) {
        let now = elapsed_ms(self.clock);
        let limit = u64::try_from(keep_alive_idle.as_millis()).unwrap_or(u64::MAX);
        let mut open = self.open.lock();
        open.retain(|_, c| {
            let expired = c.is_idle()
                && c.served.load(Ordering::Acquire)
                && now.saturating_sub(c.idle_since_ms.load(Ordering::Acquire)) >= limit;
            if expired {
                c.close.notify_one();
            }
            !expired
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().len()
    }
}

/// Serves `router` on `listener` until `shutdown` turns true, then stops accepting, lets each
/// connection finish the request it is on, and returns once all are closed.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let cap = limits.max_connections.max(1);
    let registry = Arc::new(Registry::new());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/1.1 only, as the documents' clients speak it; HTTP/2 would add its own flood
    // surface for no client of these APIs.
    builder = builder.http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let builder = Arc::new(builder);
    let refusals = Arc::new(Refusals::render().await);
    let slots = Arc::new(Semaphore::new(cap));
    let reaper = {
        let registry = registry.clone();
        let idle = limits.keep_alive_idle;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                registry.reap(idle);
            }
        })
    };
    loop {
        let slot = tokio::select! {
            slot = free_slot(&slots, &registry) => slot,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Clients such as Python's `requests` write a request's headers and body separately;
        // with Nagle's algorithm each small write can wait out a 40 ms delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (id, tracked) = registry.admit();
        let (builder, router, registry, shutdown) =
            (builder.clone(), router.clone(), registry.clone(), shutdown.clone());
        let stream = Rewriting::new(stream, refusals.clone());
        tokio::spawn(async move {
            serve_one(&builder, stream, peer, router, tracked, registry.clock, shutdown).await;
            registry.remove(id);
            // The socket is closed: its slot is free again.
            drop(slot);
        });
    }
    reaper.abort();
    drop(listener);
    // The accept loop has stopped; each connection finishes its request and closes, giving
    // its slot back.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// A free connection slot. With none free, the longest-idle connection is told to close and its
/// slot awaited; with every connection busy, the next slot to free up.
async fn free_slot(slots: &Arc<Semaphore>, registry: &Registry) -> OwnedSemaphorePermit {
    loop {
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return slot;
        }
        if registry.evict_longest_idle() {
            tracing::debug!("connection cap reached; closing the longest-idle connection");
        }
        tokio::select! {
            Ok(slot) = slots.clone().acquire_owned() => return slot,
            // A connection may have gone idle meanwhile, or the one told to close is slow to go.
            () = tokio::time::sleep(EVICT_RETRY) => {}
        }
    }
}

async fn serve_one(
    builder: &auto::Builder<TokioExecutor>,
    stream: Rewriting<TcpStream>,
    peer: SocketAddr,
    router: Router,
    tracked: Arc<Tracked>,
    clock: Instant,
    mut shutdown: watch::Receiver<bool>,
) {
    let conn_state = tracked.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(conn_state.clone(), clock);
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let response = router.oneshot(req.map(axum::body::Body::new)).await;
            drop(in_flight);
            response
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    // Header timeouts, resets and malformed requests end up here: the client's
                    // doing, worth a debug line and no more.
                    tracing::debug!(%peer, error = %e, "connection closed with an error");
                }
                return;
            }
            () = tracked.close.notified() => return,
            _ = shutdown.wait_for(|stop| *stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_idle_connection_is_the_one_evicted() {
        let registry = Registry::new();
        let (first, _a) = registry.admit();
        std::thread::sleep(Duration::from_millis(5));
        let (_, b) = registry.admit();
        let _busy_b = InFlight::begin(b, registry.clock);
        let (third, c) = registry.admit();
        assert!(registry.evict_longest_idle());
        assert!(!registry.open.lock().contains_key(&first), "the oldest idle connection went");
        let busy_c = InFlight::begin(c, registry.clock);
        assert!(!registry.evict_longest_idle(), "every connection is busy: nothing to evict");
        drop(busy_c);
        assert!(registry.evict_longest_idle(), "the connection that went idle can go");
        assert!(!registry.open.lock().contains_key(&third));
        assert_eq!(registry.len(), 1);
    }

    #[tokio::test]
    async fn a_slot_is_made_by_closing_an_idle_connection() {
        let registry = Registry::new();
        let slots = Arc::new(Semaphore::new(1));
        let held = slots.clone().try_acquire_owned().expect("the only slot");
        let (_, idle) = registry.admit();
        // The connection's task: closes when told to, giving its slot back.
        tokio::spawn(async move {
            idle.close.notified().await;
            drop(held);
        });
        let slot = tokio::time::timeout(Duration::from_secs(2), free_slot(&slots, &registry)).await;
        assert!(slot.is_ok(), "the idle connection made room");
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn only_connections_that_served_a_request_expire_as_idle() {
        let registry = Registry::new();
        let (_, fresh) = registry.admit();
        let (_, used) = registry.admit();
        drop(InFlight::begin(used.clone(), registry.clock));
        registry.reap(Duration::ZERO);
        assert_eq!(registry.len(), 1, "the used idle connection expired");
        assert!(!fresh.served.load(Ordering::Acquire));
    }
}

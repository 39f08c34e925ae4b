//! Knowing when every watch cache has done its initial list, without waiting on the caches
//! themselves: kube-runtime's `Store::wait_until_ready` keeps a single waker, so of two tasks
//! waiting on one store only the last to poll is woken (the other may hang for good). Each
//! watch stream is wrapped instead, and counts as synced at its first `InitDone`; any number of
//! tasks may wait on the tracker.

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

#[derive(Clone)]
pub struct Synced {
    /// Watch streams that have not finished their initial list.
    pending: Arc<watch::Sender<usize>>,
}

impl Default for Synced {
    fn default() -> Self {
        Self {
            pending: Arc::new(watch::channel(0).0),
        }
    }
}

impl Synced {
    /// Tracks one more watch stream.
    pub fn track<K, S>(
        &self,
        stream: S,
    ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
    where
        K: Send + 'static,
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        self.pending.send_modify(|n| *n += 1);
        let pending = self.pending.clone();
        let done = AtomicBool::new(false);
        stream.inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) && !done.swap(true, Ordering::SeqCst) {
                pending.send_modify(|n| *n = n.saturating_sub(1));
            }
        })
    }

    /// A cache of `api`'s objects, filled by the returned (tracked) watch stream.
    pub fn reflect<K>(
        &self,
        api: kube::Api<K>,
        config: watcher::Config,
    ) -> (
        kube::runtime::reflector::Store<K>,
        impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    )
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        use kube::runtime::WatchStreamExt;
        let (store, writer) = kube::runtime::reflector::store();
        let events = self.track(
            kube::runtime::reflector::reflector(writer, watcher::watcher(api, config))
                .default_backoff(),
        );
        (store, events)
    }

    /// Resolves once every tracked stream has listed.
    pub async fn wait(&self) {
        let mut rx = self.pending.subscribe();
        // The sender lives as long as self; an error cannot happen while we hold it.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub fn is_synced(&self) -> bool {
        *self.pending.borrow() == 0
    }
}

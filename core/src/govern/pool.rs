//! Containers of XClients, written once for every runtime: a fixed pool used in turn
//! (Go's `XClientPool`) and one client per service path made on first use (Go's
//! `OneClient`). The runtimes wrap them around their own `XClient`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `n` items handed out in turn (round robin), for spreading calls over several
/// XClients and so over several connections per server.
#[derive(Debug)]
pub struct Pool<T> {
    items: Vec<T>,
    next: AtomicUsize,
}

impl<T> Pool<T> {
    /// A pool of `n` (at least 1) items made by `make(index)`.
    pub fn new(n: usize, make: impl FnMut(usize) -> T) -> Self {
        Pool { items: (0..n.max(1)).map(make).collect(), next: AtomicUsize::new(0) }
    }

    /// The next item in turn.
    pub fn get(&self) -> &T {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.items.len();
        &self.items[i]
    }

    /// Every item.
    pub fn all(&self) -> &[T] {
        &self.items
    }
}

/// One item per service path, made by a factory on first use and kept.
pub struct PerService<T> {
    make: Box<dyn Fn(&str) -> T + Send + Sync>,
    items: Mutex<HashMap<String, T>>,
}

impl<T> std::fmt::Debug for PerService<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("PerService").field("services", &services).finish_non_exhaustive()
    }
}

impl<T: Clone> PerService<T> {
    /// Items made by `make(service_path)`.
    pub fn new(make: impl Fn(&str) -> T + Send + Sync + 'static) -> Self {
        PerService { make: Box::new(make), items: Mutex::new(HashMap::new()) }
    }

    /// The item for `service`, made now if it is the first use.
    pub fn get(&self, service: &str) -> T {
        let mut items = self.lock();
        if let Some(t) = items.get(service) {
            return t.clone();
        }
        let t = (self.make)(service);
        items.insert(service.to_owned(), t.clone());
        t
    }

    /// Take every item out (to close them); later uses make new ones.
    pub fn drain(&self) -> Vec<T> {
        self.lock().drain().map(|(_, t)| t).collect()
    }

    /// Service paths with an item.
    pub fn services(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }
}

impl<T> PerService<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, T>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_items_out_in_turn() {
        let p = Pool::new(3, |i| i * 10);
        let got: Vec<usize> = (0..7).map(|_| *p.get()).collect();
        assert_eq!(got, [0, 10, 20, 0, 10, 20, 0]);
        assert_eq!(Pool::new(0, |i| i).all(), &[0]);
    }

    #[test]
    fn per_service_makes_each_once() {
        let made = std::sync::Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let s = PerService::new(move |svc: &str| {
            m.fetch_add(1, Ordering::SeqCst);
            format!("client for {svc}")
        });
        assert_eq!(s.get("Arith"), "client for Arith");
        assert_eq!(s.get("Arith"), "client for Arith");
        assert_eq!(s.get("Echo"), "client for Echo");
        assert_eq!(made.load(Ordering::SeqCst), 2);
        assert_eq!(s.services(), ["Arith", "Echo"]);
        assert_eq!(s.drain().len(), 2);
        assert!(s.services().is_empty());
    }
}

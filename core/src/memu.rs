//! The in-process transport (Go's `memu` network): servers bound to `memu@NAME` and
//! clients dialing `memu@NAME` in the same process, across runtimes, with no port and
//! no file. For tests and debugging.
//!
//! The core only keeps the routes; a runtime binding `memu@NAME` registers an
//! [`Acceptor`], and a runtime dialing it makes a connected socket pair
//! (`std::os::unix::net::UnixStream::pair`), keeps one end and hands the other to the
//! acceptor.

#![cfg(unix)]

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};

/// Takes the server end of a new in-process connection; returns `false` if the server
/// is gone (the dial then fails with "connection refused").
pub type Acceptor = Arc<dyn Fn(UnixStream) -> bool + Send + Sync>;

fn routes() -> &'static Mutex<HashMap<String, Acceptor>> {
    static ROUTES: OnceLock<Mutex<HashMap<String, Acceptor>>> = OnceLock::new();
    ROUTES.get_or_init(Default::default)
}

/// A bound name; dropping it frees the name.
#[must_use = "the name is freed when the registration is dropped"]
pub struct Registration(String);

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registration(memu@{})", self.0)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        routes().lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

/// Bind `name`; `None` if another server holds it.
pub fn register(name: &str, acceptor: Acceptor) -> Option<Registration> {
    let mut r = routes().lock().unwrap_or_else(|p| p.into_inner());
    if r.contains_key(name) {
        return None;
    }
    r.insert(name.to_owned(), acceptor);
    Some(Registration(name.to_owned()))
}

/// The acceptor of the server bound to `name`, if any.
pub fn route(name: &str) -> Option<Acceptor> {
    routes().lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
}

//! [`XClientPool`] and [`OneClient`], as in Go: the containers are the core's
//! (`rpcx_core::govern::pool`), the same on every runtime.

use crate::Error;
use crate::xclient::{XClient, XClientOptions};
use rpcx_core::govern::Discovery;
use rpcx_core::govern::pool::{PerService, Pool};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// `count` XClients of one service over one discovery, used in turn (Go's
/// `XClientPool`): each has its own connections, so calls spread over `count`
/// connections per server.
///
/// ```no_run
/// # fn f(d: std::sync::Arc<rpcx_core::govern::MultiDiscovery>) -> Result<(), rpcx_std::Error> {
/// use rpcx_std::{XClientOptions, XClientPool};
/// let pool = XClientPool::new(4, "Arith", d, XClientOptions::default);
/// let reply: i64 = pool.get().call("Double", &21)?;
/// pool.close();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct XClientPool(Pool<XClient>);

impl XClientPool {
    /// `count` (at least 1) XClients for `service_path`, each with options from `opts`.
    pub fn new(
        count: usize,
        service_path: &str,
        discovery: Arc<dyn Discovery>,
        opts: impl Fn() -> XClientOptions,
    ) -> Self {
        XClientPool(Pool::new(count, |_| XClient::new(service_path, discovery.clone(), opts())))
    }

    /// The next XClient in turn.
    pub fn get(&self) -> &XClient {
        self.0.get()
    }

    /// Every XClient of the pool.
    pub fn all(&self) -> &[XClient] {
        self.0.all()
    }

    /// Close every XClient's connections.
    pub fn close(&self) {
        for xc in self.0.all() {
            xc.close();
        }
    }
}

/// One client for every service over one discovery (Go's `OneClient`): an XClient per
/// service path, made on first use with options from the factory.
///
/// ```no_run
/// # fn f(d: std::sync::Arc<rpcx_core::govern::MultiDiscovery>) -> Result<(), rpcx_std::Error> {
/// use rpcx_std::{OneClient, XClientOptions};
/// let one = OneClient::new(d, XClientOptions::default);
/// let product: i64 = one.call("Arith", "Double", &21)?;
/// let echoed = one.xclient("Echo").request("Raw").call_raw(&b"hi"[..])?;
/// one.close();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct OneClient(PerService<XClient>);

impl OneClient {
    /// A client over `discovery`; each service's XClient gets options from `opts`.
    pub fn new(discovery: Arc<dyn Discovery>, opts: impl Fn() -> XClientOptions + Send + Sync + 'static) -> Self {
        OneClient(PerService::new(move |service| XClient::new(service, discovery.clone(), opts())))
    }

    /// The XClient of `service` (made on first use), for every call form it offers.
    pub fn xclient(&self, service: &str) -> XClient {
        self.0.get(service)
    }

    /// Call `service.method` through its XClient's fail mode, decoding the reply.
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        self.xclient(service).request(method).call(args)
    }

    /// Services with an XClient so far.
    pub fn services(&self) -> Vec<String> {
        self.0.services()
    }

    /// Close every service's XClient.
    pub fn close(&self) {
        for xc in self.0.drain() {
            xc.close();
        }
    }
}

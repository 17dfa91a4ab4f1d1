//! [`XClientPool`] and [`OneClient`], as in Go: the containers are the core's
//! (`rpcx_core::govern::pool`), the same on every runtime.

use crate::xclient::{XClient, XClientOptions};
use crate::{Error, Runtime};
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
/// # async fn f<R: rpcx_async::Runtime>(d: std::sync::Arc<rpcx_core::govern::MultiDiscovery>) -> Result<(), rpcx_async::Error> {
/// use rpcx_async::{XClientOptions, XClientPool};
/// let pool = XClientPool::<R>::new(4, "Arith", d, XClientOptions::default);
/// let reply: i64 = pool.get().call("Double", &21).await?;
/// pool.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct XClientPool<Rt: Runtime>(Pool<XClient<Rt>>);

impl<Rt: Runtime> XClientPool<Rt> {
    /// `count` (at least 1) XClients for `service_path`, each with options from `opts`.
    pub fn new(
        count: usize,
        service_path: &str,
        discovery: Arc<dyn Discovery>,
        opts: impl Fn() -> XClientOptions<Rt>,
    ) -> Self {
        XClientPool(Pool::new(count, |_| XClient::new(service_path, discovery.clone(), opts())))
    }

    /// The next XClient in turn.
    pub fn get(&self) -> &XClient<Rt> {
        self.0.get()
    }

    /// Every XClient of the pool.
    pub fn all(&self) -> &[XClient<Rt>] {
        self.0.all()
    }

    /// Close every XClient's connections.
    pub async fn close(&self) {
        for xc in self.0.all() {
            xc.close().await;
        }
    }
}

/// One client for every service over one discovery (Go's `OneClient`): an XClient per
/// service path, made on first use with options from the factory.
///
/// ```no_run
/// # async fn f<R: rpcx_async::Runtime>(d: std::sync::Arc<rpcx_core::govern::MultiDiscovery>) -> Result<(), rpcx_async::Error> {
/// use rpcx_async::{OneClient, XClientOptions};
/// let one = OneClient::<R>::new(d, XClientOptions::default);
/// let product: i64 = one.call("Arith", "Double", &21).await?;
/// let echoed = one.xclient("Echo").request("Raw").call_raw(&b"hi"[..]).await?;
/// one.close().await;
/// # Ok(()) }
/// ```
pub struct OneClient<Rt: Runtime>(PerService<XClient<Rt>>);

impl<Rt: Runtime> std::fmt::Debug for OneClient<Rt> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OneClient").field(&self.0).finish()
    }
}

impl<Rt: Runtime> OneClient<Rt> {
    /// A client over `discovery`; each service's XClient gets options from `opts`.
    pub fn new(discovery: Arc<dyn Discovery>, opts: impl Fn() -> XClientOptions<Rt> + Send + Sync + 'static) -> Self {
        OneClient(PerService::new(move |service| XClient::new(service, discovery.clone(), opts())))
    }

    /// The XClient of `service` (made on first use), for every call form it offers.
    pub fn xclient(&self, service: &str) -> XClient<Rt> {
        self.0.get(service)
    }

    /// Call `service.method` through its XClient's fail mode, decoding the reply.
    pub async fn call<A: Serialize + ?Sized, R: DeserializeOwned + Send>(
        &self,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        self.xclient(service).request(method).call(args).await
    }

    /// Services with an XClient so far.
    pub fn services(&self) -> Vec<String> {
        self.0.services()
    }

    /// Close every service's XClient.
    pub async fn close(&self) {
        for xc in self.0.drain() {
            xc.close().await;
        }
    }
}

//! Registry flags shared by `rpcx serve` (register there) and `rpcx gateway` (find
//! upstreams there): `--registry etcd://host:port[,host:port...]`,
//! `zookeeper://host:port[,host:port...]`, `consul://host:port` or
//! `redis://[:password@]host:port[/db]`, and
//! `--base-path` (Go's
//! `BasePath`, default `/rpcx_test` as in Go's rpcx-gateway).

use crate::Failure;
use clap::Args;
use rpcx_registry::consul::{ConsulConfig, ConsulDiscovery, ConsulRegistrar};
use rpcx_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistrar};
use rpcx_registry::redis::{RedisConfig, RedisDiscovery, RedisRegistrar};
use rpcx_registry::zookeeper::{ZkConfig, ZkDiscovery, ZkRegistrar};
use rpcx_tokio::core::govern::Discovery;
use rpcx_tokio::core::registry::Registrar;
use std::sync::Arc;

#[derive(Args, Debug, Clone)]
pub(crate) struct RegistryArgs {
    /// A service registry: etcd://host:port[,host:port...], zookeeper://host:port[,...],
    /// consul://host:port or redis://[:password@]host:port[/db].
    #[arg(long, value_name = "URL")]
    pub(crate) registry: Option<String>,
    /// The registry's base path (Go's BasePath): nodes are BASE/<service>/<address>.
    #[arg(long, default_value = "/rpcx_test", requires = "registry")]
    pub(crate) base_path: String,
}

/// A parsed `--registry`.
#[derive(Debug, Clone)]
pub(crate) enum Registry {
    Etcd(EtcdConfig),
    Zookeeper(ZkConfig),
    Consul(ConsulConfig),
    Redis(RedisConfig),
}

impl RegistryArgs {
    /// The registry, if `--registry` was given.
    pub(crate) fn parse(&self) -> Result<Option<Registry>, Failure> {
        self.registry.as_deref().map(|url| Registry::parse(url, &self.base_path)).transpose()
    }
}

impl Registry {
    pub(crate) fn parse(url: &str, base_path: &str) -> Result<Registry, Failure> {
        let bad = |why: &str| {
            Failure::usage(format!(
                "bad --registry {url:?}: {why} (use etcd://, zookeeper://, consul:// or redis://host:port)"
            ))
        };
        if base_path.trim_matches('/').is_empty() {
            return Err(Failure::usage("--base-path must name a path, e.g. /rpcx_test"));
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let endpoints = || {
            let endpoints: Vec<&str> = rest.trim_end_matches('/').split(',').collect();
            for e in &endpoints {
                let ok = e.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !ok {
                    return Err(bad(&format!("endpoint {e:?} is not host:port")));
                }
            }
            Ok(endpoints)
        };
        match scheme {
            "etcd" => {
                Ok(Registry::Etcd(EtcdConfig::new(endpoints()?.iter().map(|e| format!("http://{e}")), base_path)))
            }
            "zookeeper" | "zk" => Ok(Registry::Zookeeper(ZkConfig::new(endpoints()?, base_path))),
            "consul" => match endpoints()?.as_slice() {
                [one] => Ok(Registry::Consul(ConsulConfig::new(one, base_path))),
                _ => Err(bad("Consul takes one agent address")),
            },
            "redis" => {
                if rest.is_empty() {
                    return Err(bad("no host"));
                }
                Ok(Registry::Redis(RedisConfig::new(url, base_path)))
            }
            other => Err(bad(&format!("unknown registry {other:?}"))),
        }
    }

    /// A registrar publishing a server's services here.
    pub(crate) fn registrar(&self) -> Result<Box<dyn Registrar>, Failure> {
        let failed = |e: rpcx_registry::RegistryError| Failure::usage(format!("registry: {e}"));
        Ok(match self {
            Registry::Etcd(c) => Box::new(EtcdRegistrar::new(c.clone()).map_err(failed)?),
            Registry::Zookeeper(c) => Box::new(ZkRegistrar::new(c.clone()).map_err(failed)?),
            Registry::Consul(c) => Box::new(ConsulRegistrar::new(c.clone()).map_err(failed)?),
            Registry::Redis(c) => Box::new(RedisRegistrar::new(c.clone()).map_err(failed)?),
        })
    }

    /// Discovery of `service`'s servers, listed once before this returns.
    pub(crate) async fn discovery(&self, service: &str) -> Result<Arc<dyn Discovery>, rpcx_registry::RegistryError> {
        Ok(match self {
            Registry::Etcd(c) => Arc::new(EtcdDiscovery::connect(c.clone(), service).await?),
            Registry::Zookeeper(c) => Arc::new(ZkDiscovery::connect(c.clone(), service).await?),
            Registry::Consul(c) => Arc::new(ConsulDiscovery::connect(c.clone(), service).await?),
            Registry::Redis(c) => Arc::new(RedisDiscovery::connect(c.clone(), service).await?),
        })
    }
}

/// One server of `service` from `registry`, for a single call: an active one (not
/// `state=inactive`), chosen at random.
pub(crate) async fn pick(registry: &Registry, service: &str) -> Result<String, Failure> {
    let discovery =
        registry.discovery(service).await.map_err(|e| Failure::failed(format!("discovery of {service}: {e}")))?;
    let servers: Vec<String> = discovery
        .snapshot()
        .servers
        .iter()
        .filter(|s| !s.metadata().is_inactive())
        .map(|s| s.key().to_string())
        .collect();
    if servers.is_empty() {
        return Err(Failure::failed(format!("no active server of {service} in the registry")));
    }
    // Random enough to spread one-off calls: the std hasher's per-process random keys.
    use std::hash::{BuildHasher, RandomState};
    let i = RandomState::new().hash_one(std::time::SystemTime::now()) as usize % servers.len();
    Ok(servers[i].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls() {
        match Registry::parse("etcd://127.0.0.1:2379,10.0.0.2:2379", "/rpcx_test").unwrap() {
            Registry::Etcd(c) => {
                assert_eq!(c.endpoints(), ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]);
                assert_eq!(c.base_path(), "/rpcx_test");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(Registry::parse("redis://:pw@127.0.0.1:6379/2", "rpcx").unwrap(), Registry::Redis(_)));
        assert!(matches!(Registry::parse("zookeeper://127.0.0.1:2181", "/rpcx").unwrap(), Registry::Zookeeper(_)));
        assert!(matches!(Registry::parse("consul://127.0.0.1:8500", "/rpcx").unwrap(), Registry::Consul(_)));
        assert!(Registry::parse("consul://127.0.0.1:8500,10.0.0.1:8500", "/rpcx").is_err());
        for bad in ["127.0.0.1:2379", "etcd://127.0.0.1", "etcd://:2379", "consol://h:1", "zk://h", "redis://"] {
            assert!(Registry::parse(bad, "/rpcx_test").is_err(), "{bad}");
        }
        assert!(Registry::parse("etcd://127.0.0.1:2379", "/").is_err());
    }
}

//! Publishing a listed service to XClients, shared by every backend's discovery.

use rpcx_core::govern::{Discovery as _, Instance, MultiDiscovery};
use std::collections::BTreeMap;

/// Publish `servers` (discovery key to metadata, as listed under `prefix`) on `list`
/// if they differ from what clients see now; an unchanged list is not a new version.
pub(crate) fn publish(list: &MultiDiscovery, servers: &BTreeMap<String, String>, prefix: &str) {
    let current = list.snapshot();
    let same = current.servers.len() == servers.len()
        && current.servers.iter().zip(servers).all(|(i, (k, v))| i.key().as_str() == k && i.metadata().raw() == v);
    if !same {
        let version = list.update(servers.iter().map(|(k, v)| Instance::new(k.as_str(), v)));
        tracing::debug!(prefix, version, servers = servers.len(), "discovery updated");
    }
}

//! The few HTTP requests the backend makes, through hyper's pooled HTTP/1 client; every
//! request is bounded in time and every response body in size.

use super::{ConsulConfig, KvEntry, LOCK_FLAG_VALUE, encode_path, go_millis};
use crate::RegistryError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The largest response body read (a listing of many nodes fits easily).
const MAX_BODY: usize = 16 << 20;

/// One Consul agent's HTTP API.
#[derive(Debug, Clone)]
pub(super) struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    address: String,
    op_timeout: Duration,
}

/// A response: status, `X-Consul-Index`, body.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) index: Option<u64>,
    pub(super) body: Bytes,
}

impl Api {
    pub(super) fn new(config: &ConsulConfig) -> Api {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.op_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Api { client, address: config.address.clone(), op_timeout: config.op_timeout }
    }

    /// `method path` with `body`, answered within `limit`.
    async fn send(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        limit: Duration,
    ) -> Result<Reply, RegistryError> {
        let uri = format!("{}{path}", self.address);
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| RegistryError::Operation { op, source: Box::new(e) })?;
        let exchange = async {
            let resp = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    RegistryError::Connect { endpoints: self.address.clone(), source: Box::new(e) }
                } else {
                    RegistryError::Operation { op, source: Box::new(e) }
                }
            })?;
            let status = resp.status();
            let index = resp
                .headers()
                .get("x-consul-index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| RegistryError::Operation { op, source: e })?
                .to_bytes();
            Ok(Reply { status, index, body })
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(r) => r,
            Err(_) => Err(RegistryError::Timeout { op, after: limit }),
        }
    }

    /// A request that must answer 200 (or one of `also`).
    async fn expect(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        also: &[StatusCode],
    ) -> Result<Reply, RegistryError> {
        let r = self.send(op, method, path, body, self.op_timeout).await?;
        if r.status == StatusCode::OK || also.contains(&r.status) { Ok(r) } else { Err(refused(op, &r)) }
    }

    /// `PUT /v1/session/create` with `Behavior=delete`, `LockDelay=1ms` and `ttl`;
    /// the session's ID.
    pub(super) async fn create_session(&self, name: &str, ttl: Duration) -> Result<String, RegistryError> {
        let body = serde_json::json!({
            "Name": name,
            "Behavior": "delete",
            "TTL": format!("{}s", ttl.as_secs()),
            "LockDelay": go_millis(Duration::from_millis(1)),
        });
        let r = self
            .expect("session create", Method::PUT, "/v1/session/create", Some(body.to_string().into_bytes()), &[])
            .await?;
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let created: Created = serde_json::from_slice(&r.body)
            .map_err(|e| RegistryError::Operation { op: "session create", source: Box::new(e) })?;
        if created.id.is_empty() {
            return Err(RegistryError::Operation { op: "session create", source: "empty session ID".into() });
        }
        Ok(created.id)
    }

    /// `PUT /v1/session/renew/<id>`: `Ok(false)` if Consul no longer knows the session.
    pub(super) async fn renew_session(&self, id: &str) -> Result<bool, RegistryError> {
        let path = format!("/v1/session/renew/{}", encode_path(id));
        let r = self.expect("session renew", Method::PUT, &path, None, &[StatusCode::NOT_FOUND]).await?;
        Ok(r.status == StatusCode::OK)
    }

    /// `PUT /v1/session/destroy/<id>` (deletes the keys it still holds).
    pub(super) async fn destroy_session(&self, id: &str) -> Result<(), RegistryError> {
        let path = format!("/v1/session/destroy/{}", encode_path(id));
        self.expect("session destroy", Method::PUT, &path, None, &[]).await?;
        Ok(())
    }

    /// `PUT /v1/kv/<key>?flags=...` (plus `acquire=<session>` if given): whether Consul
    /// answered `true` (an acquire of a key another session holds answers `false`).
    pub(super) async fn put(&self, key: &str, value: &[u8], acquire: Option<&str>) -> Result<bool, RegistryError> {
        let mut path = format!("/v1/kv/{}?flags={LOCK_FLAG_VALUE}", encode_path(key));
        if let Some(session) = acquire {
            path.push_str("&acquire=");
            path.push_str(&encode_path(session));
        }
        let r = self.expect("put", Method::PUT, &path, Some(value.to_vec()), &[]).await?;
        Ok(is_true(&r.body))
    }

    /// `GET /v1/kv/<key>`: the entry, `None` if missing.
    pub(super) async fn get(&self, key: &str) -> Result<Option<KvEntry>, RegistryError> {
        let path = format!("/v1/kv/{}", encode_path(key));
        let r = self.expect("get", Method::GET, &path, None, &[StatusCode::NOT_FOUND]).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let entries: Vec<KvEntry> =
            serde_json::from_slice(&r.body).map_err(|e| RegistryError::Operation { op: "get", source: Box::new(e) })?;
        Ok(entries.into_iter().find(|e| e.key == key))
    }

    /// `DELETE /v1/kv/<key>`.
    pub(super) async fn delete(&self, key: &str) -> Result<(), RegistryError> {
        let path = format!("/v1/kv/{}", encode_path(key));
        self.expect("delete", Method::DELETE, &path, None, &[]).await?;
        Ok(())
    }

    /// `GET /v1/kv/<prefix>?recurse`, blocking from `index` for up to `wait` when
    /// `index` is not 0: the entries (none for a 404) and the `X-Consul-Index`.
    pub(super) async fn list(
        &self,
        prefix: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(Vec<KvEntry>, u64), RegistryError> {
        let mut path = format!("/v1/kv/{}?recurse", encode_path(prefix));
        let mut limit = self.op_timeout;
        if index > 0 {
            path.push_str(&format!("&index={index}&wait={}", go_millis(wait)));
            // Consul adds up to wait/16 of jitter.
            limit += wait + wait / 16;
        }
        let r = self.send("list", Method::GET, &path, None, limit).await?;
        if !matches!(r.status, StatusCode::OK | StatusCode::NOT_FOUND) {
            return Err(refused("list", &r));
        }
        // Blocking queries need the index; an agent that sends none is not Consul.
        let Some(index) = r.index else {
            return Err(RegistryError::Operation { op: "list", source: "no X-Consul-Index in the answer".into() });
        };
        match r.status {
            StatusCode::NOT_FOUND => Ok((Vec::new(), index)),
            StatusCode::OK => {
                let entries: Vec<KvEntry> = serde_json::from_slice(&r.body)
                    .map_err(|e| RegistryError::Operation { op: "list", source: Box::new(e) })?;
                Ok((entries, index))
            }
            _ => Err(refused("list", &r)),
        }
    }
}

fn is_true(body: &[u8]) -> bool {
    body.trim_ascii() == b"true"
}

/// A non-2xx answer as an error, with the start of its body.
fn refused(op: &'static str, r: &Reply) -> RegistryError {
    let text = String::from_utf8_lossy(&r.body[..r.body.len().min(512)]).trim().to_owned();
    RegistryError::Operation { op, source: format!("HTTP {}: {text}", r.status).into() }
}

//! A local CloudFront KeyValueStore data plane (the `cloudfront-keyvaluestore`
//! API, version 2022-07-26), because no local AWS emulator implements it.
//! It answers the six operations as `aws-sdk-cloudfrontkeyvaluestore`
//! sends them (restJson1):
//!
//! | operation | request | success |
//! |---|---|---|
//! | DescribeKeyValueStore | `GET /key-value-stores/{KvsARN}` | 200, `ETag`, `{KvsARN, Created, LastModified, ItemCount, TotalSizeInBytes, Status}` |
//! | GetKey | `GET /key-value-stores/{KvsARN}/keys/{Key}` | 200, `{Key, Value, ItemCount, TotalSizeInBytes}` |
//! | ListKeys | `GET /key-value-stores/{KvsARN}/keys?NextToken=&MaxResults=` | 200, `{Items: [{Key, Value}], NextToken?}` |
//! | PutKey | `PUT /key-value-stores/{KvsARN}/keys/{Key}`, `If-Match`, `{Value}` | 200, `ETag`, `{ItemCount, TotalSizeInBytes}` |
//! | DeleteKey | `DELETE /key-value-stores/{KvsARN}/keys/{Key}`, `If-Match` | 200, `ETag`, `{ItemCount, TotalSizeInBytes}` |
//! | UpdateKeys | `POST /key-value-stores/{KvsARN}/keys`, `If-Match`, `{Puts: [{Key, Value}], Deletes: [{Key}]}` | 200, `ETag`, `{ItemCount, TotalSizeInBytes}` |
//!
//! `{KvsARN}` and `{Key}` are path labels, percent-encoded whole (`:` and
//! `/` included). Errors carry `x-amzn-ErrorType` and `{"Message"}`:
//! ValidationException 400, AccessDeniedException 403,
//! ResourceNotFoundException 404, ConflictException 409 (a stale
//! `If-Match`), InternalServerException 500. The limits are in [`store`].
//!
//! Every request must be signed with SigV4A (see [`sigv4a`] for what is
//! checked) and is recorded in [`KvsServer::requests`]. Faults are
//! switched at runtime with [`KvsServer::set_fault`] and
//! [`KvsServer::conflict_next_updates`]. The SDK reaches the server
//! through [`client::sdk_client`]; why `endpoint_url` alone cannot is in
//! [`client`].

pub mod client;
pub mod sigv4a;
pub mod store;

pub use client::{sdk_client, sdk_config, LoopbackEndpoint, TEST_ACCESS_KEY_ID};
pub use sigv4a::{Signing, SIGV4A};
pub use store::KvsError;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use store::{Store, Totals};

/// The account every store belongs to (the SDK puts it in the endpoint).
pub const ACCOUNT_ID: &str = "123456789012";

/// What the server does to requests, switchable at runtime; a request
/// takes the fault in force when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answers normally.
    #[default]
    None,
    /// Handles the request at once and holds its answer back this long:
    /// a client that gives up meanwhile has still written, the ambiguous
    /// case a publisher must survive.
    Delay(Duration),
    /// Reads the request and never answers (nor handles it); the
    /// connection stays open until the server is dropped.
    Hang,
    /// Answers 500 InternalServerException without handling the request.
    InternalError,
}

/// The data-plane operations, told apart by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    DescribeKeyValueStore,
    GetKey,
    ListKeys,
    PutKey,
    DeleteKey,
    UpdateKeys,
    /// A method and path no operation has.
    Unknown,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub operation: Operation,
    pub method: String,
    /// The path as sent, labels still percent-encoded.
    pub path: String,
    /// The store ARN from the path, decoded.
    pub kvs_arn: Option<String>,
    /// The first word of `Authorization`: [`SIGV4A`] when signed by the SDK.
    pub algorithm: Option<String>,
    pub access_key_id: Option<String>,
    /// `x-amz-region-set`.
    pub region_set: Option<String>,
    pub signed_headers: Vec<String>,
    pub if_match: Option<String>,
    /// The status answered; `None` if the request was never answered
    /// ([`Fault::Hang`]).
    pub status: Option<u16>,
}

#[derive(Default)]
struct Faults {
    fault: Fault,
    /// UpdateKeys calls still to lose to an imaginary other writer.
    conflicts: u32,
}

#[derive(Default)]
struct Shared {
    stores: Mutex<HashMap<String, Store>>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<RecordedRequest>>,
    request_ids: AtomicU64,
}

/// Locks, ignoring poisoning: a test that panicked holding a lock has
/// failed already, and the server must still answer the others.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running local KeyValueStore holding one store (more with
/// [`KvsServer::add_store`]). Dropping it stops it and closes every
/// connection.
pub struct KvsServer {
    addr: SocketAddr,
    arn: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KvsServer {
    fn drop(&mut self) {
        // The accept loop owns the connections' JoinSet: aborting it
        // aborts them, hung ones included.
        self.task.abort();
    }
}

impl KvsServer {
    /// Binds 127.0.0.1 on a free port and serves in a task, with one empty
    /// store.
    pub async fn start() -> io::Result<KvsServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = serving.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let mut server = KvsServer {
            addr,
            arn: String::new(),
            shared,
            task,
        };
        server.arn = server.add_store();
        Ok(server)
    }

    /// The server's URL, `http://127.0.0.1:PORT`, for
    /// [`LoopbackEndpoint`]; see [`client`] for why the SDK's
    /// `endpoint_url` cannot take it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The first store's ARN, in the service's format:
    /// `arn:aws:cloudfront::123456789012:key-value-store/<36-character id>`.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Creates another empty store and returns its ARN.
    pub fn add_store(&self) -> String {
        let random = std::collections::hash_map::RandomState::new();
        let word = |salt: u64| {
            let mut h = random.build_hasher();
            h.write_u64(salt);
            h.write_u64(self.shared.request_ids.load(Ordering::Relaxed));
            h.finish()
        };
        let (a, b) = (word(1), word(2));
        let id = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        );
        let arn = format!("arn:aws:cloudfront::{ACCOUNT_ID}:key-value-store/{id}");
        let store = Store::new(arn.clone(), (a ^ b) as u32);
        lock(&self.shared.stores).insert(arn.clone(), store);
        arn
    }

    /// Switches the fault every following request takes.
    pub fn set_fault(&self, fault: Fault) {
        lock(&self.shared.faults).fault = fault;
    }

    /// Makes the next `n` UpdateKeys calls that pass validation answer
    /// 409 ConflictException as if another writer had just won: each also
    /// moves the store's ETag on (contents unchanged), so only a client
    /// that describes the store again gets through afterwards.
    pub fn conflict_next_updates(&self, n: u32) {
        lock(&self.shared.faults).conflicts = n;
    }

    /// The first store's current ETag.
    pub fn etag(&self) -> String {
        self.etag_of(&self.arn).expect("the first store exists")
    }

    pub fn etag_of(&self, arn: &str) -> Option<String> {
        lock(&self.shared.stores).get(arn).map(Store::etag)
    }

    /// Every pair of the first store.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.snapshot_of(&self.arn).expect("the first store exists")
    }

    pub fn snapshot_of(&self, arn: &str) -> Option<BTreeMap<String, String>> {
        lock(&self.shared.stores)
            .get(arn)
            .map(|s| s.items().clone())
    }

    /// Writes pairs into the first store past every check, as another
    /// writer would; the ETag changes.
    pub fn seed<K: Into<String>, V: Into<String>>(&self, pairs: impl IntoIterator<Item = (K, V)>) {
        let mut stores = lock(&self.shared.stores);
        let store = stores.get_mut(&self.arn).expect("the first store exists");
        store.force(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
    }

    /// Every request so far, in the order they were answered (a hung
    /// request is recorded when it starts hanging).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// The requests of one operation.
    pub fn requests_of(&self, operation: Operation) -> Vec<RecordedRequest> {
        let log = lock(&self.shared.log);
        log.iter()
            .filter(|r| r.operation == operation)
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }
}

/// A parsed route: the operation, the store ARN and the key, decoded.
struct Route {
    operation: Operation,
    arn: Option<String>,
    key: Option<String>,
}

fn route(method: &Method, path: &str) -> Result<Route, KvsError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let decode = |s: &str| {
        percent_decode(s)
            .ok_or_else(|| KvsError::Validation(format!("Path label {s:?} is not valid UTF-8")))
    };
    let operation = match (method, &segments[..]) {
        (&Method::GET, ["key-value-stores", _]) => Operation::DescribeKeyValueStore,
        (&Method::GET, ["key-value-stores", _, "keys"]) => Operation::ListKeys,
        (&Method::POST, ["key-value-stores", _, "keys"]) => Operation::UpdateKeys,
        (&Method::GET, ["key-value-stores", _, "keys", _]) => Operation::GetKey,
        (&Method::PUT, ["key-value-stores", _, "keys", _]) => Operation::PutKey,
        (&Method::DELETE, ["key-value-stores", _, "keys", _]) => Operation::DeleteKey,
        _ => {
            return Ok(Route {
                operation: Operation::Unknown,
                arn: None,
                key: None,
            })
        }
    };
    Ok(Route {
        operation,
        arn: Some(decode(segments[1])?),
        key: segments.get(3).map(|k| decode(k)).transpose()?,
    })
}

/// Decodes `%XX` escapes; `None` if one is malformed or the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, KvsError> {
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            let v = percent_decode(&v.replace('+', " ")).ok_or_else(|| {
                KvsError::Validation(format!("Query parameter {name} is not valid"))
            })?;
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// What a successful operation answers.
struct Answer {
    etag: Option<String>,
    body: Value,
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = format!(
        "kvs-local-{:08}",
        shared.request_ids.fetch_add(1, Ordering::Relaxed)
    );
    let (parts, body) = req.into_parts();
    let signing = Signing::read(&parts.headers);
    let if_match = parts
        .headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = parts.uri.path().to_string();
    let routed = route(&parts.method, &path);
    let mut record = RecordedRequest {
        operation: routed.as_ref().map_or(Operation::Unknown, |r| r.operation),
        method: parts.method.to_string(),
        path,
        kvs_arn: routed.as_ref().ok().and_then(|r| r.arn.clone()),
        algorithm: signing.algorithm.clone(),
        access_key_id: signing.access_key_id.clone(),
        region_set: signing.region_set.clone(),
        signed_headers: signing.signed_headers.clone(),
        if_match: if_match.clone(),
        status: None,
    };
    // Read the whole request first, so a hung or failed one has been sent.
    let body = body.collect().await.map(|b| b.to_bytes());
    let fault = lock(&shared.faults).fault;
    if fault == Fault::Hang {
        tracing::debug!(operation = ?record.operation, "local KVS: hanging");
        lock(&shared.log).push(record);
        return std::future::pending().await;
    }
    let outcome = if fault == Fault::InternalError {
        Err(KvsError::Internal(
            "Injected internal server error".to_string(),
        ))
    } else {
        match (signing.verify(&parts.headers), routed, body) {
            (Err(why), _, _) => Err(KvsError::AccessDenied(why)),
            (Ok(()), Err(e), _) => Err(e),
            (Ok(()), _, Err(e)) => Err(KvsError::Validation(format!("Unreadable body: {e}"))),
            (Ok(()), Ok(route), Ok(body)) => operate(
                shared,
                &route,
                parts.uri.query(),
                if_match.as_deref(),
                &body,
            ),
        }
    };
    let response = match outcome {
        Ok(answer) => json_response(200, &request_id, answer.etag.as_deref(), &answer.body),
        Err(e) => {
            tracing::debug!(operation = ?record.operation, code = e.code(), %e, "local KVS: refused");
            let mut response = json_response(
                e.status(),
                &request_id,
                None,
                &json!({ "Message": e.to_string() }),
            );
            response.headers_mut().insert(
                "x-amzn-errortype",
                e.code().parse().expect("error codes are header-safe"),
            );
            response
        }
    };
    record.status = Some(response.status().as_u16());
    lock(&shared.log).push(record);
    if let Fault::Delay(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    response
}

fn json_response(
    status: u16,
    request_id: &str,
    etag: Option<&str>,
    body: &Value,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-requestid", request_id);
    if let Some(etag) = etag {
        builder = builder.header("etag", etag);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn operate(
    shared: &Shared,
    route: &Route,
    query: Option<&str>,
    if_match: Option<&str>,
    body: &[u8],
) -> Result<Answer, KvsError> {
    if route.operation == Operation::Unknown {
        return Err(KvsError::UnknownOperation(
            "No KeyValueStore operation has this method and path".into(),
        ));
    }
    // Parsed before the store is locked; limits on the parts come later.
    let (puts, deletes) = match route.operation {
        Operation::PutKey => {
            let doc = parse_body(body)?;
            let value = doc
                .get("Value")
                .and_then(Value::as_str)
                .ok_or_else(|| KvsError::Validation("Value is required".into()))?;
            let key = route.key.clone().unwrap_or_default();
            (vec![(key, value.to_string())], vec![])
        }
        Operation::DeleteKey => (vec![], vec![route.key.clone().unwrap_or_default()]),
        Operation::UpdateKeys => update_keys_body(body)?,
        _ => (vec![], vec![]),
    };
    let mut stores = lock(&shared.stores);
    let arn = route.arn.as_deref().unwrap_or_default();
    let store = stores
        .get_mut(arn)
        .ok_or_else(|| KvsError::NotFound(format!("Key value store {arn} not found")))?;
    match route.operation {
        Operation::DescribeKeyValueStore => Ok(Answer {
            etag: Some(store.etag()),
            body: describe(store),
        }),
        Operation::GetKey => {
            let key = route.key.as_deref().unwrap_or_default();
            let value = store.get(key)?;
            let totals = store.totals();
            Ok(Answer {
                etag: None,
                body: json!({
                    "Key": key,
                    "Value": value,
                    "ItemCount": totals.item_count,
                    "TotalSizeInBytes": totals.total_size_in_bytes,
                }),
            })
        }
        Operation::ListKeys => list_keys(store, query),
        Operation::PutKey | Operation::DeleteKey | Operation::UpdateKeys => {
            let lose_race = route.operation == Operation::UpdateKeys && {
                let mut faults = lock(&shared.faults);
                // Counted only for requests that would otherwise be
                // judged on their ETag.
                let would_validate = store.validate(if_match, &puts, &deletes).is_ok();
                if would_validate && faults.conflicts > 0 {
                    faults.conflicts -= 1;
                    true
                } else {
                    false
                }
            };
            let totals = store.update(if_match, &puts, &deletes, lose_race)?;
            Ok(mutation_answer(store.etag(), totals))
        }
        Operation::Unknown => unreachable!("answered above"),
    }
}

fn mutation_answer(etag: String, totals: Totals) -> Answer {
    Answer {
        etag: Some(etag),
        body: json!({
            "ItemCount": totals.item_count,
            "TotalSizeInBytes": totals.total_size_in_bytes,
        }),
    }
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn describe(store: &Store) -> Value {
    let totals = store.totals();
    json!({
        "KvsARN": store.arn,
        "Created": epoch_seconds(store.created),
        "LastModified": epoch_seconds(store.last_modified),
        "ItemCount": totals.item_count,
        "TotalSizeInBytes": totals.total_size_in_bytes,
        "Status": "READY",
    })
}

fn list_keys(store: &Store, query: Option<&str>) -> Result<Answer, KvsError> {
    let max = match query_param(query, "MaxResults")? {
        None => store::DEFAULT_PAGE,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=store::MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(KvsError::Validation(format!(
                    "MaxResults {n:?} is outside 1..={}",
                    store::MAX_PAGE
                )))
            }
        },
    };
    let after = query_param(query, "NextToken")?
        .map(|token| {
            decode_token(&token)
                .ok_or_else(|| KvsError::Validation(format!("NextToken {token:?} is not valid")))
        })
        .transpose()?;
    let (page, next) = store.page(after.as_deref(), max);
    let items: Vec<Value> = page
        .into_iter()
        .map(|(k, v)| json!({ "Key": k, "Value": v }))
        .collect();
    let mut body = json!({ "Items": items });
    if let Some(last) = next {
        body["NextToken"] = Value::String(encode_token(&last));
    }
    Ok(Answer { etag: None, body })
}

/// Page tokens are the last key returned, hex-encoded: opaque to the
/// client, and safe in a query string whatever the key holds.
fn encode_token(last_key: &str) -> String {
    last_key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Option<String> {
    if token.is_empty() || !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn parse_body(body: &[u8]) -> Result<Value, KvsError> {
    serde_json::from_slice(body)
        .map_err(|e| KvsError::Validation(format!("The body is not a JSON document: {e}")))
}

type Puts = Vec<(String, String)>;

fn update_keys_body(body: &[u8]) -> Result<(Puts, Vec<String>), KvsError> {
    if body.len() > store::MAX_UPDATE_BYTES {
        return Err(KvsError::Validation(format!(
            "UpdateKeys payload is {} bytes, over {}",
            body.len(),
            store::MAX_UPDATE_BYTES
        )));
    }
    let doc = parse_body(body)?;
    let list = |name: &str| match doc.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(KvsError::Validation(format!("{name} must be a list"))),
    };
    let text = |item: &Value, field: &str| {
        item.get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| KvsError::Validation(format!("Every item needs a string {field}")))
    };
    let puts = list("Puts")?
        .iter()
        .map(|item| Ok((text(item, "Key")?, text(item, "Value")?)))
        .collect::<Result<Vec<_>, KvsError>>()?;
    let deletes = list("Deletes")?
        .iter()
        .map(|item| text(item, "Key"))
        .collect::<Result<Vec<_>, KvsError>>()?;
    if puts.is_empty() && deletes.is_empty() {
        return Err(KvsError::Validation(
            "UpdateKeys needs at least one Put or Delete".into(),
        ));
    }
    if puts.len() + deletes.len() > store::MAX_UPDATE_KEYS {
        return Err(KvsError::Validation(format!(
            "UpdateKeys changes {} keys, over {}",
            puts.len() + deletes.len(),
            store::MAX_UPDATE_KEYS
        )));
    }
    Ok((puts, deletes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_percent_encoded_labels() {
        let arn = "arn%3Aaws%3Acloudfront%3A%3A123456789012%3Akey-value-store%2Fabc";
        let r = route(
            &Method::PUT,
            &format!("/key-value-stores/{arn}/keys/a%2Fb%20c"),
        )
        .unwrap();
        assert_eq!(r.operation, Operation::PutKey);
        assert_eq!(
            r.arn.as_deref(),
            Some("arn:aws:cloudfront::123456789012:key-value-store/abc")
        );
        assert_eq!(r.key.as_deref(), Some("a/b c"));
        let r = route(&Method::POST, &format!("/key-value-stores/{arn}/keys")).unwrap();
        assert_eq!(r.operation, Operation::UpdateKeys);
        let r = route(&Method::PATCH, &format!("/key-value-stores/{arn}")).unwrap();
        assert_eq!(r.operation, Operation::Unknown);
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(
            decode_token(&encode_token("k/é&=")).as_deref(),
            Some("k/é&=")
        );
        assert_eq!(decode_token("zz"), None);
    }
}

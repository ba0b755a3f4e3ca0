//! The DynamoDB global table: one item per (pool, region), partition key
//! `pool`, sort key `region`, native attributes (see
//! [`codec`]), TTL on `expires_at`.
//!
//! Writes are conditional on `seq`, so a deposed leader's late write fails
//! with `ConditionalCheckFailedException` and the newer ranking stays.
//! Reads fetch all regions of a pool with one Query on the nearest replica.
//!
//! Endpoint, region and credentials come from the standard AWS
//! configuration (`AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL`, profile,
//! environment, instance role), so a local DynamoDB API server needs no code
//! change.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

mod clock;
pub mod codec;

use clock::DEFAULT_CLOCK_TIMEOUT;

use super::{ControlWrite, PoolRankings, RankingStore, StoreClock, StoreError, WriteOutcome};
use crate::config::StoreConfig;
use crate::control::Control;
use crate::document::{seq_ceiling, RankingDocument};
use crate::sample::unix_millis_now;
use codec::TTL_ATTRIBUTE;

/// A control item's end (Unix ms), for the condition of a write that must
/// not replace a control in force.
const UNTIL_ATTRIBUTE: &str = "until_ms";

/// How the SDK client behaves on a slow table. The prober takes the SDK's
/// defaults (a slow write only delays publishing); the edge bounds every
/// call by its `table_timeout`, since a viewer waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientTuning {
    /// Connect timeout; the whole operation gets twice this.
    pub timeout: Option<Duration>,
    /// Attempts per call, the first included.
    pub max_attempts: Option<u32>,
}

/// The rankings table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    item_ttl: Duration,
    /// Bound on one clock reading ([`RankingStore::clock`]).
    clock_timeout: Duration,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, item_ttl: Duration) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            item_ttl,
            clock_timeout: DEFAULT_CLOCK_TIMEOUT,
        }
    }

    /// Bounds each clock reading by `timeout` rather than the default 5 s. ([`DynamoStore::connect`] takes the
    /// operation timeout of its [`ClientTuning`] when it sets one.)
    pub fn with_clock_timeout(mut self, timeout: Duration) -> Self {
        self.clock_timeout = timeout;
        self
    }

    /// A client for `config`'s table: endpoint and credentials from the
    /// standard AWS configuration chain (or `store.dynamodb_endpoint`), the
    /// replica nearest `region`, and the SDK's timeouts and retries as
    /// `client` says. `None` when the config names no table.
    pub async fn connect(config: &StoreConfig, region: &str, client: ClientTuning) -> Option<Self> {
        let table = config.dynamodb_table.clone()?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(replica) = super::replica_for(config, region) {
            loader = loader.region(aws_config::Region::new(replica));
        }
        if let Some(endpoint) = &config.dynamodb_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(timeout) = client.timeout {
            loader = loader.timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_timeout(timeout * 2)
                    .build(),
            );
        }
        if let Some(attempts) = client.max_attempts {
            loader = loader.retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(attempts),
            );
        }
        let sdk = loader.load().await;
        let store = DynamoStore::new(Client::new(&sdk), table, config.item_ttl);
        Some(match client.timeout {
            // The same bound as every other operation of this client.
            Some(timeout) => store.with_clock_timeout(timeout * 2),
            None => store,
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the table (on-demand, TTL on `expires_at`) unless it exists.
    /// For local use and tests; in AWS the deploy templates own the table.
    /// Returns whether it was created.
    pub async fn create_table(&self) -> Result<bool, StoreError> {
        let exists = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        if exists.is_ok() {
            return Ok(false);
        }
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition has its required fields")
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .expect("key schema element has its required fields")
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pool"))
            .attribute_definitions(attr("region"))
            .key_schema(key("pool", KeyType::Hash))
            .key_schema(key("region", KeyType::Range))
            .send()
            .await
            .map_err(dynamo_error("CreateTable"))?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()
                    .expect("TTL specification has its required fields"),
            )
            .send()
            .await
            .map_err(dynamo_error("UpdateTimeToLive"))?;
        Ok(true)
    }
}

/// The store error for a failed `operation`: a one-line message (the
/// service's code and message, or the transport failure with its causes;
/// never the raw response, which would flood the logs), and the SDK's error
/// kept as the source.
fn dynamo_error<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| {
        let message = match &e {
            SdkError::ServiceError(service) => format!(
                "{}: {}",
                service.err().code().unwrap_or("service error"),
                service.err().message().unwrap_or_default()
            ),
            SdkError::TimeoutError(_) => "timed out".to_string(),
            other => super::error_chain(other),
        };
        StoreError::Dynamo {
            operation,
            message,
            source: Box::new(e),
        }
    }
}

impl DynamoStore {
    /// Every item of the pool's partition (rankings and controls), page
    /// by page, once sent.
    fn partition(
        &self,
        pool: &str,
    ) -> aws_sdk_dynamodb::operation::query::paginator::QueryPaginatorItems {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#p = :p")
            .expression_attribute_names("#p", "pool")
            .expression_attribute_values(":p", AttributeValue::S(pool.to_string()))
            .into_paginator()
            .items()
    }
}

#[async_trait]
impl RankingStore for DynamoStore {
    async fn read_pool(&self, pool: &str) -> Result<PoolRankings, StoreError> {
        let mut out = PoolRankings::default();
        let mut pages = self.partition(pool).send();
        while let Some(item) = pages.next().await {
            let item = item.map_err(dynamo_error("Query"))?;
            let region = match item.get("region") {
                Some(AttributeValue::S(r)) => r.chars().take(200).collect(),
                _ => "?".to_string(),
            };
            // A drain or override: sort key `KIND#...`, in the same
            // partition, so this one Query brings them.
            if region.contains('#') {
                match control_from_item(&item, pool, &region) {
                    Ok(c) => out.controls.controls.push(c),
                    Err(reason) => out.controls.skipped.push((region, reason)),
                }
                continue;
            }
            match codec::from_item(item) {
                Ok(doc) if doc.pool == pool => out.rankings.push(doc),
                Ok(doc) => out
                    .skipped
                    .push((region, format!("item holds pool `{}`", doc.pool))),
                Err(e) => out.skipped.push((region, e.to_string())),
            }
        }
        Ok(out)
    }

    async fn write(&self, doc: &RankingDocument) -> Result<WriteOutcome, StoreError> {
        let now = unix_millis_now();
        doc.validate()?;
        doc.check_clock(now)?;
        let expires_at = now / 1000 + self.item_ttl.as_secs();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(codec::to_item(doc, expires_at)))
            // `super::may_replace`, as a condition: a newer seq, or a stored
            // seq above the ceiling (a runaway clock's write, repaired), or
            // no numeric seq at all (a hand-planted item no reader can
            // decode must not freeze the region either).
            .condition_expression(
                "attribute_not_exists(#p) OR attribute_not_exists(#s) OR NOT attribute_type(#s, :number) OR #s < :seq OR #s > :ceiling",
            )
            .expression_attribute_values(":number", AttributeValue::S("N".into()))
            .expression_attribute_names("#p", "pool")
            .expression_attribute_names("#s", "seq")
            .expression_attribute_values(":seq", AttributeValue::N(doc.seq.to_string()))
            .expression_attribute_values(
                ":ceiling",
                AttributeValue::N(seq_ceiling(now).to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(WriteOutcome::Stale)
            }
            Err(e) => Err(dynamo_error("PutItem")(e)),
        }
    }

    async fn delete(&self, pool: &str, region: &str) -> Result<bool, StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pool", AttributeValue::S(pool.to_string()))
            .key("region", AttributeValue::S(region.to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(dynamo_error("DeleteItem"))?;
        Ok(deleted.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// Controls are items of the pool's partition whose sort key is
    /// [`Control::key`] (`#` never appears in a region), the control's
    /// JSON in attribute `control`, removed by the table's TTL an hour
    /// after `until`.
    async fn put_control(
        &self,
        control: &Control,
        replace: bool,
    ) -> Result<ControlWrite, StoreError> {
        control
            .validate()
            .map_err(|e| StoreError::InvalidControl(e.to_string()))?;
        let expires_at = control.until / 1000 + 3600;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pool", AttributeValue::S(control.pool.clone()))
            .item("region", AttributeValue::S(control.key()))
            .item("control", AttributeValue::S(control.to_json()))
            .item(
                UNTIL_ATTRIBUTE,
                AttributeValue::N(control.until.to_string()),
            )
            .item(TTL_ATTRIBUTE, AttributeValue::N(expires_at.to_string()));
        if !replace {
            // Atomic: no item under the key, or one that has ended by the
            // new one's start. An item without `until_ms` counts as in
            // force (the operator replaces it explicitly).
            put = put
                .condition_expression("attribute_not_exists(#r) OR #u <= :start")
                .expression_attribute_names("#r", "region")
                .expression_attribute_names("#u", UNTIL_ATTRIBUTE)
                .expression_attribute_values(
                    ":start",
                    AttributeValue::N(control.set_at.to_string()),
                );
        }
        match put.send().await {
            Ok(_) => Ok(ControlWrite::Written),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(ControlWrite::InForce)
            }
            Err(e) => Err(dynamo_error("PutItem")(e)),
        }
    }

    async fn delete_control(&self, pool: &str, key: &str) -> Result<bool, StoreError> {
        if !key.contains('#') {
            return Err(StoreError::InvalidName(key.chars().take(64).collect()));
        }
        self.delete(pool, key).await
    }

    async fn list_pools(&self) -> Result<Vec<String>, StoreError> {
        let mut pools = std::collections::BTreeSet::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .projection_expression("#p")
            .expression_attribute_names("#p", "pool")
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            if let Some(AttributeValue::S(p)) = item.map_err(dynamo_error("Scan"))?.get("pool") {
                pools.insert(p.clone());
            }
        }
        Ok(pools.into_iter().collect())
    }

    /// The table's clock from an empty Query's `Date` answer header, to
    /// the second (see the `clock` module).
    async fn clock(&self) -> Result<Option<StoreClock>, StoreError> {
        self.read_clock().await.map(Some)
    }
}

/// Decodes a control item read from `pool`'s partition under sort key
/// `key`; the reason when it is not a valid control of that key.
fn control_from_item(
    item: &std::collections::HashMap<String, AttributeValue>,
    pool: &str,
    key: &str,
) -> Result<Control, String> {
    let c = match item.get("control") {
        Some(AttributeValue::S(json)) => {
            Control::from_json(json.as_bytes()).map_err(|e| e.to_string())?
        }
        _ => return Err("no string attribute `control`".to_string()),
    };
    if c.pool != pool || c.key() != key {
        return Err(format!("item holds pool `{}` key `{}`", c.pool, c.key()));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use std::error::Error as _;

    /// A failed call names its operation and the service's one-line
    /// reason, and keeps the SDK's error (and what caused it) as sources.
    #[test]
    fn a_dynamo_error_keeps_the_sdk_error_as_its_source() {
        let throttled = PutItemError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("slow down")
                .build(),
        );
        let e = dynamo_error("PutItem")(SdkError::<_, ()>::service_error(throttled, ()));
        assert_eq!(
            e.to_string(),
            "DynamoDB PutItem: ThrottlingException: slow down"
        );
        let sdk = e
            .source()
            .and_then(|s| s.downcast_ref::<SdkError<PutItemError, ()>>())
            .expect("the SDK error is the source");
        assert_eq!(
            sdk.as_service_error().and_then(|s| s.code()),
            Some("ThrottlingException")
        );
        assert!(!e.is_permanent());

        // A transport failure: its causes are in the message and in the
        // chain, down to the I/O error.
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = dynamo_error("Query")(SdkError::<PutItemError, ()>::construction_failure(refused));
        assert_eq!(
            e.to_string(),
            "DynamoDB Query: failed to construct request: refused"
        );
        let mut chain = Vec::new();
        let mut next = e.source();
        while let Some(s) = next {
            chain.push(s);
            next = s.source();
        }
        assert!(chain[0].is::<SdkError<PutItemError, ()>>(), "{chain:?}");
        let io = chain
            .last()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the I/O error ends the chain");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}

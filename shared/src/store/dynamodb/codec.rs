//! The DynamoDB item codec of a ranking document: native attributes
//! (`pool` partition key, `region` sort key, numbers as `N`, the origins as a
//! list of maps) so that `aws dynamodb query` shows readable numbers and
//! strings, plus `expires_at` for the table's TTL.
//!
//! Decoding never trusts its input: size first, then the schema version,
//! then types, then every value against the document's bounds.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::document::{check_schema, DocumentError, RankingDocument, MAX_JSON_BYTES};

/// The table's TTL attribute: epoch seconds after which DynamoDB may delete
/// the item (a region whose probers are gone stops being served).
pub const TTL_ATTRIBUTE: &str = "expires_at";

const DOC_FIELDS: [&str; 8] = [
    "schema_version",
    "pool",
    "region",
    "seq",
    "generated_at",
    "probe_interval_ms",
    "workers",
    "origins",
];

/// Encodes `doc` as an item that expires at `expires_at_secs` (epoch
/// seconds).
pub fn to_item(doc: &RankingDocument, expires_at_secs: u64) -> HashMap<String, AttributeValue> {
    let mut item: HashMap<String, AttributeValue> =
        serde_dynamo::to_item(doc).expect("a ranking document always encodes");
    item.insert(
        TTL_ATTRIBUTE.into(),
        AttributeValue::N(expires_at_secs.to_string()),
    );
    item
}

/// Decodes and validates an item. Attributes not in the layout (added by
/// tooling or replication) are ignored.
pub fn from_item(item: HashMap<String, AttributeValue>) -> Result<RankingDocument, DocumentError> {
    let size: usize = item.iter().map(|(k, v)| k.len() + attribute_size(v)).sum();
    if size > MAX_JSON_BYTES {
        return Err(DocumentError::TooLarge(size));
    }
    let version = match item.get("schema_version") {
        Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
        _ => None,
    };
    check_schema(version)?;
    let known: HashMap<String, AttributeValue> = item
        .into_iter()
        .filter(|(k, _)| DOC_FIELDS.contains(&k.as_str()))
        .collect();
    let doc: RankingDocument =
        serde_dynamo::from_item(known).map_err(|e| DocumentError::Malformed(e.to_string()))?;
    doc.validate()?;
    Ok(doc)
}

/// A rough byte size of an attribute value, to refuse absurd items before
/// decoding them.
fn attribute_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::L(l) => l.iter().map(attribute_size).sum::<usize>() + 1,
        AttributeValue::M(m) => {
            m.iter()
                .map(|(k, v)| k.len() + attribute_size(v))
                .sum::<usize>()
                + 1
        }
        AttributeValue::Ss(l) | AttributeValue::Ns(l) => l.iter().map(String::len).sum(),
        AttributeValue::Bs(l) => l.iter().map(|b| b.as_ref().len()).sum(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::tests::sample_doc;

    #[test]
    fn round_trip_uses_native_attributes() {
        let doc = sample_doc();
        let item = to_item(&doc, 1_780_086_400);
        assert_eq!(item["pool"], AttributeValue::S("web".into()));
        assert_eq!(item["region"], AttributeValue::S("eu-west-1".into()));
        assert_eq!(item["seq"], AttributeValue::N("42".into()));
        assert_eq!(item["expires_at"], AttributeValue::N("1780086400".into()));
        let AttributeValue::L(origins) = &item["origins"] else {
            panic!("origins is not a list: {:?}", item["origins"]);
        };
        let AttributeValue::M(first) = &origins[0] else {
            panic!("origin entry is not a map");
        };
        assert_eq!(first["state"], AttributeValue::S("healthy".into()));
        assert_eq!(first["latency_ms"], AttributeValue::N("12.5".into()));
        let AttributeValue::M(second) = &origins[1] else {
            panic!("origin entry is not a map");
        };
        assert_eq!(
            second["last_failure"],
            AttributeValue::S("connect_timeout".into())
        );
        assert!(!second.contains_key("latency_ms"));
        assert_eq!(from_item(item).unwrap(), doc);
    }

    #[test]
    fn unknown_or_missing_schema_is_rejected_first() {
        let mut item = to_item(&sample_doc(), 0);
        item.insert("schema_version".into(), AttributeValue::N("7".into()));
        assert!(matches!(
            from_item(item),
            Err(DocumentError::UnknownSchema(7))
        ));
        let mut item = to_item(&sample_doc(), 0);
        item.remove("schema_version");
        assert!(matches!(from_item(item), Err(DocumentError::NoSchema)));
    }

    #[test]
    fn wrong_types_are_errors() {
        let mut item = to_item(&sample_doc(), 0);
        item.insert("seq".into(), AttributeValue::S("forty-two".into()));
        let err = from_item(item).unwrap_err();
        assert!(matches!(err, DocumentError::Malformed(_)), "{err}");
        let mut item = to_item(&sample_doc(), 0);
        item.insert("origins".into(), AttributeValue::S("fra,iad".into()));
        assert!(from_item(item).is_err());
    }
}

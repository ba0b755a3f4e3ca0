//! The SigV4A check of the local KeyValueStore: what a request's signature
//! headers say, and whether they have the shape the SDK's SigV4A signer
//! gives them.
//!
//! Checked: the `Authorization` header is
//! `AWS4-ECDSA-P256-SHA256 Credential=<AKID>/<yyyymmdd>/cloudfront-keyvaluestore/aws4_request, SignedHeaders=<h1;h2;...>, Signature=<hex>`
//! (a SigV4A credential scope has no region); `x-amz-region-set` is
//! present and not empty; `x-amz-date` is present and on the scope's day;
//! the signed headers are lower case, sorted, include `host`,
//! `x-amz-date` and `x-amz-region-set`, and are all present; the
//! signature is hex of a plausible DER ECDSA P-256 signature length.
//!
//! Not checked: the ECDSA signature itself (it would mean rebuilding the
//! canonical request and deriving the key pair from the secret), the
//! secret key, and clock skew. A request that is signed, but wrongly, is
//! therefore accepted: these tests are about the SDK signing with SigV4A
//! at all, which the SDK's own tests cover the arithmetic of.

use hyper::HeaderMap;

/// The SigV4A algorithm name.
pub const SIGV4A: &str = "AWS4-ECDSA-P256-SHA256";
/// The signing name the endpoint rules give the service.
pub const SIGNING_NAME: &str = "cloudfront-keyvaluestore";

/// What a request's signature headers say, as far as they can be read;
/// an unsigned request has every field empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signing {
    /// The first word of `Authorization` (`AWS4-ECDSA-P256-SHA256` for
    /// SigV4A, `AWS4-HMAC-SHA256` for SigV4).
    pub algorithm: Option<String>,
    pub access_key_id: Option<String>,
    /// The credential scope after the access key id.
    pub scope: Option<String>,
    /// `x-amz-region-set`.
    pub region_set: Option<String>,
    pub signed_headers: Vec<String>,
    pub signature: Option<String>,
}

impl Signing {
    /// Reads the headers without judging them.
    pub fn read(headers: &HeaderMap) -> Signing {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut signing = Signing {
            region_set: text("x-amz-region-set"),
            ..Signing::default()
        };
        let Some(auth) = text("authorization") else {
            return signing;
        };
        let (algorithm, rest) = auth.split_once(' ').unwrap_or((auth.as_str(), ""));
        signing.algorithm = Some(algorithm.to_string());
        for part in rest.split(',').map(str::trim) {
            if let Some(credential) = part.strip_prefix("Credential=") {
                let (akid, scope) = credential.split_once('/').unwrap_or((credential, ""));
                signing.access_key_id = Some(akid.to_string());
                signing.scope = Some(scope.to_string());
            } else if let Some(names) = part.strip_prefix("SignedHeaders=") {
                signing.signed_headers = names.split(';').map(str::to_string).collect();
            } else if let Some(signature) = part.strip_prefix("Signature=") {
                signing.signature = Some(signature.to_string());
            }
        }
        signing
    }

    /// Whether the headers have the shape of a SigV4A signature by the SDK
    /// (see the module documentation for what that covers); the reason if
    /// not.
    pub fn verify(&self, headers: &HeaderMap) -> Result<(), String> {
        match self.algorithm.as_deref() {
            Some(SIGV4A) => {}
            Some(other) => return Err(format!("Authorization uses {other}, not {SIGV4A}")),
            None => return Err("Missing Authentication Token".into()),
        }
        match self.access_key_id.as_deref() {
            Some(akid) if !akid.is_empty() => {}
            _ => return Err("Credential has no access key id".into()),
        }
        let scope: Vec<&str> = self.scope.as_deref().unwrap_or("").split('/').collect();
        let [date, service, "aws4_request"] = scope[..] else {
            return Err(format!(
                "Credential scope {:?} is not <date>/<service>/aws4_request",
                self.scope.as_deref().unwrap_or("")
            ));
        };
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("Credential date {date:?} is not yyyymmdd"));
        }
        if service != SIGNING_NAME {
            return Err(format!(
                "Credential is scoped to {service:?}, not {SIGNING_NAME}"
            ));
        }
        match self.region_set.as_deref() {
            Some(set) if !set.trim().is_empty() => {}
            _ => return Err("x-amz-region-set is missing".into()),
        }
        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or("x-amz-date is missing")?;
        if amz_date.len() != 16 || !amz_date.starts_with(date) {
            return Err(format!(
                "x-amz-date {amz_date:?} is not on the scope's day {date}"
            ));
        }
        let names = &self.signed_headers;
        if names.is_empty() || !names.windows(2).all(|w| w[0] < w[1]) {
            return Err("SignedHeaders are not sorted and distinct".into());
        }
        for required in ["host", "x-amz-date", "x-amz-region-set"] {
            if !names.iter().any(|n| n == required) {
                return Err(format!("SignedHeaders lack {required}"));
            }
        }
        for name in names {
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(format!("Signed header {name:?} is not lower case"));
            }
            if !headers.contains_key(name.as_str()) {
                return Err(format!("Signed header {name:?} is not in the request"));
            }
        }
        let signature = self.signature.as_deref().unwrap_or("");
        // A DER ECDSA P-256 signature is 8 to 72 bytes.
        let plausible = (16..=144).contains(&signature.len())
            && signature.len().is_multiple_of(2)
            && signature.bytes().all(|b| b.is_ascii_hexdigit());
        if !plausible {
            return Err(format!(
                "Signature {signature:?} is not a hex ECDSA signature"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    const AUTH: &str = "AWS4-ECDSA-P256-SHA256 Credential=AKIDEXAMPLE/20240102/cloudfront-keyvaluestore/aws4_request, SignedHeaders=host;x-amz-date;x-amz-region-set, Signature=3045022100aabbccddeeff0011223344";

    #[test]
    fn reads_and_accepts_a_sigv4a_header() {
        let map = headers(&[
            ("authorization", AUTH),
            ("host", "127.0.0.1"),
            ("x-amz-date", "20240102T030405Z"),
            ("x-amz-region-set", "*"),
        ]);
        let signing = Signing::read(&map);
        assert_eq!(signing.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(signing.region_set.as_deref(), Some("*"));
        assert_eq!(signing.signed_headers.len(), 3);
        assert_eq!(signing.verify(&map), Ok(()));
    }

    #[test]
    fn refuses_sigv4_and_a_missing_region_set() {
        let sigv4 = AUTH.replace(SIGV4A, "AWS4-HMAC-SHA256");
        let map = headers(&[
            ("authorization", &sigv4),
            ("host", "h"),
            ("x-amz-date", "20240102T030405Z"),
            ("x-amz-region-set", "*"),
        ]);
        assert!(Signing::read(&map).verify(&map).is_err());
        let map = headers(&[
            ("authorization", AUTH),
            ("host", "h"),
            ("x-amz-date", "20240102T030405Z"),
        ]);
        assert!(Signing::read(&map).verify(&map).is_err());
        assert!(Signing::read(&HeaderMap::new())
            .verify(&HeaderMap::new())
            .is_err());
    }
}

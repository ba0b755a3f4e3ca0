//! TLS client configuration: rustls with the bundled web PKI roots (no
//! OpenSSL, no system certificate store needed in Lambda or a slim image),
//! plus an origin's own CA file where it has one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use tokio_rustls::TlsConnector;

/// A CA file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read CA file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no usable PEM certificate in CA file{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NoCertificate {
        path: PathBuf,
        detail: Option<String>,
    },
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

/// A connector trusting the web PKI roots and, if given, a PEM CA file.
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut added = 0;
        let mut detail = None;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            match cert.map(|c| roots.add(c)) {
                Ok(Ok(())) => added += 1,
                Ok(Err(e)) => detail = Some(e.to_string()),
                Err(e) => detail = Some(e.to_string()),
            }
        }
        if added == 0 {
            return Err(TlsError::NoCertificate {
                path: path.to_path_buf(),
                detail,
            });
        }
    }
    // An explicit provider: several crates in the tree enable different
    // rustls providers, and the process-wide default would then be ambiguous.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_ca_files_are_named() {
        let err = connector(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/ca.pem: cannot read"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = connector(Some(&path)).err().unwrap();
        assert!(
            err.to_string().contains("no usable PEM certificate"),
            "{err}"
        );
    }
}

//! TLS to the server with rustls (ring provider), through `tokio-postgres-rustls`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::PostgresError;

/// How the connection to the server is protected, named after libpq's `sslmode`.
///
/// ```
/// use cqrs_postgres::TlsConfig;
///
/// assert_eq!("verify-full".parse::<TlsConfig>().unwrap(), TlsConfig::VerifyFull { ca_file: None });
/// assert_eq!("disable".parse::<TlsConfig>().unwrap(), TlsConfig::Disable);
/// assert!("verify-ca".parse::<TlsConfig>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsConfig {
    /// Plain TCP. Only for a server on the same host or a trusted network.
    Disable,
    /// TLS if the server offers it, plain otherwise; the certificate is not verified
    /// (libpq's default).
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not verified: protects against passive
    /// eavesdropping only.
    Require,
    /// TLS or fail, the certificate chain verified against `ca_file` (a PEM bundle) or,
    /// when `None`, the Mozilla root store; the host name must match the certificate.
    VerifyFull {
        /// PEM file with the CA certificate(s) to trust.
        ca_file: Option<PathBuf>,
    },
}

impl std::str::FromStr for TlsConfig {
    type Err = PostgresError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disable" => Ok(TlsConfig::Disable),
            "prefer" | "allow" => Ok(TlsConfig::Prefer),
            "require" => Ok(TlsConfig::Require),
            "verify-full" => Ok(TlsConfig::VerifyFull { ca_file: None }),
            "verify-ca" => Err(PostgresError::Config(
                "sslmode=verify-ca is not supported; use verify-full (CA and host name are checked)"
                    .into(),
            )),
            _ => Err(PostgresError::Config(
                "unknown sslmode: use disable, prefer, require or verify-full".into(),
            )),
        }
    }
}

impl TlsConfig {
    /// The `tokio-postgres` setting that goes with this mode.
    pub(crate) fn ssl_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode;
        match self {
            TlsConfig::Disable => SslMode::Disable,
            TlsConfig::Prefer => SslMode::Prefer,
            TlsConfig::Require | TlsConfig::VerifyFull { .. } => SslMode::Require,
        }
    }

    /// The rustls client configuration for this mode, `None` for [`TlsConfig::Disable`].
    pub(crate) fn client_config(&self) -> Result<Option<ClientConfig>, PostgresError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| PostgresError::Tls(format!("protocol versions: {e}")))?;
        let config = match self {
            TlsConfig::Disable => return Ok(None),
            TlsConfig::Prefer | TlsConfig::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateVerification {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            TlsConfig::VerifyFull { ca_file } => {
                let roots = root_store(ca_file.as_ref())?;
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Some(config))
    }
}

fn root_store(ca_file: Option<&PathBuf>) -> Result<RootCertStore, PostgresError> {
    let mut roots = RootCertStore::empty();
    let Some(path) = ca_file else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let pem = std::fs::read(path)
        .map_err(|e| PostgresError::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
    let mut reader = pem.as_slice();
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| {
            PostgresError::Tls(format!("cannot parse CA file {}: {e}", path.display()))
        })?;
        roots.add(cert).map_err(|e| {
            PostgresError::Tls(format!("invalid CA certificate in {}: {e}", path.display()))
        })?;
    }
    if roots.is_empty() {
        return Err(PostgresError::Tls(format!(
            "CA file {} contains no PEM certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// Accepts any server certificate but still checks the handshake signatures, as libpq
/// does for `sslmode=require`.
struct NoCertificateVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for NoCertificateVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoCertificateVerification")
    }
}

impl ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_every_mode() {
        assert!(TlsConfig::Disable.client_config().unwrap().is_none());
        assert!(TlsConfig::Prefer.client_config().unwrap().is_some());
        assert!(TlsConfig::Require.client_config().unwrap().is_some());
        assert!(
            TlsConfig::VerifyFull { ca_file: None }
                .client_config()
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn missing_or_empty_ca_file_is_an_error() {
        let missing = TlsConfig::VerifyFull {
            ca_file: Some("/nonexistent/ca.pem".into()),
        };
        assert!(matches!(
            missing.client_config(),
            Err(PostgresError::Tls(_))
        ));

        let dir = std::env::temp_dir().join(format!("cqrs-pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let mode = TlsConfig::VerifyFull {
            ca_file: Some(empty),
        };
        assert!(matches!(mode.client_config(), Err(PostgresError::Tls(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

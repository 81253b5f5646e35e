//! One HTTPS client per process, and one trust store (ADR 032).
//!
//! `reqwest::Client::new()` reads and decodes the system's root certificates every time it is
//! called (rustls-platform-verifier loads them eagerly): about 2 ms from a bundle, 6.5 ms when
//! a hashed certificate directory is read too — per client, at start-up. Here the certificates
//! are read once per process, on the first TLS handshake, by the same rustls verifier against the
//! same system store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured, as before), and every client
//! shares them.

use std::sync::{Arc, LazyLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};

/// A client for everything without its own policy (providers' admin APIs, chat and paging
/// channels, Google). Cheap to build: the trust store is the process's, read on first use. A
/// function builds one and clones it; it is not a process-wide static, because its pooled
/// connections belong to the tokio runtime that opened them (a test process runs many).
pub fn client() -> reqwest::Client {
    builder()
        .build()
        .expect("a client with a preconfigured TLS stack builds")
}

/// A client builder on the process's trust store, for clients with their own policy (the SNS
/// certificate fetch: no redirects).
pub fn builder() -> reqwest::ClientBuilder {
    static TLS: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("aws-lc supports the default protocol versions")
            .dangerous()
            // not dangerous: the verifier is rustls's own WebPKI one, built on first use
            .with_custom_certificate_verifier(Arc::new(SystemRoots {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    });
    reqwest::Client::builder().use_preconfigured_tls(TLS.clone())
}

/// rustls's WebPKI verifier on the system's root certificates, loaded on the first handshake.
#[derive(Debug)]
struct SystemRoots {
    algorithms: WebPkiSupportedAlgorithms,
}

impl SystemRoots {
    fn verifier(&self) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
        static VERIFIER: LazyLock<Result<Arc<WebPkiServerVerifier>, String>> =
            LazyLock::new(|| system_roots_verifier(rustls_native_certs::load_native_certs()));
        VERIFIER.clone().map_err(TlsError::General)
    }
}

/// The verifier on what was loaded; none when nothing usable was (every handshake then fails,
/// naming why, rather than trusting nothing silently).
fn system_roots_verifier(
    loaded: rustls_native_certs::CertificateResult,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no system root certificates could be loaded ({})",
            errors.join("; ")
        ));
    }
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()
    .map_err(|e| format!("the system root certificates cannot verify: {e}"))
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
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
    fn no_usable_root_certificate_is_an_error_naming_why() {
        let empty = rustls_native_certs::CertificateResult::default();
        let error = system_roots_verifier(empty).unwrap_err();
        assert!(error.contains("no system root certificates"), "{error}");
    }
}

//! [`UpstreamTls`]: how the gate reaches an app over https, the certificates it trusts
//! for it.
//!
//! The app's certificate is always verified, and always against the upstream's host as
//! written: a host name, or an IP literal, which the certificate must then carry as an IP
//! address name. pingora turns verification off for an empty server name, and an upstream
//! always has a host, so that never happens here.

use std::fmt;
use std::sync::Arc;

use ::pingora::utils::tls::{WrappedX509, parse_x509};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The certificates an https upstream is verified against: the system's roots, or only
/// the CAs of one PEM file (`[server] upstream_ca_file`).
#[derive(Clone)]
pub struct UpstreamTls {
    // `None`: the system's roots.
    cas: Option<Arc<[CertificateDer<'static>]>>,
    // The same CAs in pingora's form, parsed once here rather than on each connection.
    wrapped: Option<Arc<[WrappedX509]>>,
}

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// No certificate in the PEM text.
    #[error("no PEM certificate in it")]
    Empty,
    /// A certificate that is not valid DER or not usable as a trust anchor.
    #[error("certificate {0} is not a usable CA certificate: {1}")]
    Invalid(usize, String),
}

impl UpstreamTls {
    /// Verification against the system's root certificates.
    pub fn system_roots() -> UpstreamTls {
        UpstreamTls {
            cas: None,
            wrapped: None,
        }
    }

    /// Verification against the CA certificates in `pem` only (the system's roots are not
    /// trusted then: a private CA names exactly who may serve the app).
    pub fn from_ca_pem(pem: &[u8]) -> Result<UpstreamTls, UpstreamTlsError> {
        let mut cas = Vec::new();
        for (index, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let cert = cert.map_err(|e| UpstreamTlsError::Invalid(index + 1, format!("{e:?}")))?;
            // Checked here: pingora's parser panics on a certificate it cannot read.
            webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| UpstreamTlsError::Invalid(index + 1, e.to_string()))?;
            cas.push(cert);
        }
        if cas.is_empty() {
            return Err(UpstreamTlsError::Empty);
        }
        let wrapped: Vec<WrappedX509> = cas
            .iter()
            .map(|cert| WrappedX509::new(cert.to_vec(), parse_x509))
            .collect();
        Ok(UpstreamTls {
            cas: Some(cas.into()),
            wrapped: Some(wrapped.into()),
        })
    }

    /// The CAs for pingora's peer; `None`: the system's roots.
    pub(super) fn peer_ca(&self) -> Option<Arc<[WrappedX509]>> {
        self.wrapped.clone()
    }

    /// The CAs for the gate's own client; `None`: the system's roots.
    pub(super) fn client_roots(&self) -> Option<Vec<reqwest::Certificate>> {
        let cas = self.cas.as_ref()?;
        Some(
            cas.iter()
                .filter_map(|cert| reqwest::Certificate::from_der(cert).ok())
                .collect(),
        )
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &UpstreamTls) -> bool {
        self.cas == other.cas
    }
}

impl Eq for UpstreamTls {}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cas {
            None => f.write_str("system roots"),
            Some(cas) => write!(f, "{} CA certificate(s)", cas.len()),
        }
    }
}

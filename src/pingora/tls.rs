//! TLS termination: the certificates the proxy serves, chosen by the name a client asks
//! for (SNI) and replaceable while it runs, and the plain-HTTP listener that only sends
//! clients to https.
//!
//! The handshake is rustls on aws-lc-rs (the crypto of the rest of otpgate), TLS 1.2 and
//! 1.3 only, with ALPN `h2` and `http/1.1`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use ::pingora::apps::http_app::ServeHttp;
use ::pingora::http::RequestHeader;
use ::pingora::protocols::http::ServerSession;
use ::pingora::tls::sign::CertifiedKey;
use ::pingora::tls::{
    CertificateDer, ClientHello, CryptoProvider, PrivateKeyDer, ResolvesServerCert, ServerName,
};
use async_trait::async_trait;
use rustls_pki_types::pem::PemObject;

/// Makes aws-lc-rs the process's rustls crypto provider. pingora's TLS, and the HTTP and
/// SMTP clients the gate delivers codes with, all take the process default: whichever is
/// installed first wins, so the binary calls this first thing, and [`serve`](super::serve)
/// again for embeddings. Calling it again changes nothing.
pub fn install_crypto_provider() {
    // vendor/pingora-rustls installs aws-lc-rs here (ring is not linked at all).
    ::pingora::tls::install_default_crypto_provider();
}

/// The process's provider, aws-lc-rs unless an embedding installed another first.
fn provider() -> Option<&'static Arc<CryptoProvider>> {
    install_crypto_provider();
    CryptoProvider::get_default()
}

/// Why a certificate or its key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The certificate file holds no readable certificate.
    #[error("{0}")]
    Certificate(String),
    /// The key file holds no readable private key, or one that does not match the
    /// certificate.
    #[error("{0}")]
    Key(String),
}

/// A certificate chain with its private key, checked to belong together.
#[derive(Clone)]
pub struct Certificate {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
}

impl Certificate {
    /// The chain in `cert_pem` (the server's certificate first, then intermediates) and
    /// the private key in `key_pem` (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Certificate, CertificateError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertificateError::Certificate(format!("not a PEM certificate: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(CertificateError::Certificate(
                "no certificate in the file (expected -----BEGIN CERTIFICATE-----)".into(),
            ));
        };
        let names = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| CertificateError::Certificate(format!("unreadable certificate: {e}")))?
            .valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| CertificateError::Key(format!("no readable private key: {e}")))?;
        // Loads the key with the provider and checks it is the certificate's own.
        let provider = provider()
            .ok_or_else(|| CertificateError::Key("no TLS crypto provider is installed".into()))?;
        let key = CertifiedKey::from_der(chain, key, provider)
            .map_err(|e| CertificateError::Key(format!("unusable with the certificate: {e}")))?;
        Ok(Certificate {
            key: Arc::new(key),
            names,
        })
    }

    /// The DNS names the certificate is for (its subject alternative names).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether the certificate is valid for `name`, wildcards as TLS clients read them.
    fn serves(&self, name: &ServerName<'_>) -> bool {
        self.key
            .end_entity_cert()
            .ok()
            .and_then(|leaf| webpki::EndEntityCert::try_from(leaf).ok())
            .is_some_and(|leaf| leaf.verify_is_valid_for_subject_name(name).is_ok())
    }

    fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// The certificates a TLS listener serves: to each handshake the first one valid for the
/// name the client asked for, else the first one. Clones share the list, so that
/// [`replace`](Self::replace) on one (a config reload) changes what every listener
/// serves to new connections; handshakes under way finish with the one they chose.
#[derive(Clone, Default)]
pub struct Certificates(Arc<RwLock<Arc<[Certificate]>>>);

impl Certificates {
    /// A list served in this order of preference.
    pub fn new(list: Vec<Certificate>) -> Certificates {
        Certificates(Arc::new(RwLock::new(list.into())))
    }

    /// The certificates served now.
    pub fn current(&self) -> Arc<[Certificate]> {
        // One assignment writes the list, so a poisoned lock still holds a whole one.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Serves `list` to the connections that start from now on.
    pub fn replace(&self, list: Arc<[Certificate]>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = list;
    }

    /// The certificate for a client that asked for `server_name`.
    fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let list = self.current();
        let asked = server_name.and_then(|name| ServerName::try_from(name).ok());
        let chosen = asked
            .and_then(|name| list.iter().find(|cert| cert.serves(&name)))
            // No SNI (a client dialing an IP) or an unknown name: the first one.
            .or_else(|| list.first());
        chosen.map(|cert| cert.key.clone())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(client_hello.server_name())
    }
}

/// Equal when they serve the same chains in the same order now.
impl PartialEq for Certificates {
    fn eq(&self, other: &Certificates) -> bool {
        let (mine, theirs) = (self.current(), other.current());
        mine.len() == theirs.len()
            && mine
                .iter()
                .zip(theirs.iter())
                .all(|(a, b)| a.chain() == b.chain())
    }
}

impl Eq for Certificates {}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.current().iter().map(|cert| &cert.names))
            .finish()
    }
}

/// The proxy's TLS listener (`[server.tls]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsListener {
    /// Where TLS clients connect.
    pub listen: SocketAddr,
    /// What it serves, chosen by SNI; a reload replaces them in place.
    pub certificates: Certificates,
    /// The `Strict-Transport-Security` value every answer over TLS carries.
    pub hsts: Option<http::HeaderValue>,
    /// Whether the plain listener (`[server] listen`) only redirects to https.
    pub redirect_http: bool,
}

/// Answers every request on the plain listener with `308` to the same path on https:
/// nothing is served, and no cookie or token is read, over plain HTTP.
pub(super) struct RedirectToHttps {
    /// The TLS listener's port; left out of the address when 443.
    pub(super) port: u16,
}

/// Where to send the client: the authority of an absolute-form target, which a server
/// uses over Host (RFC 9112, 3.2.2), else the Host header. pingora has already refused a
/// request with two Hosts, or a Host that differs from the target's authority.
fn authority(request: &RequestHeader) -> Option<http::uri::Authority> {
    // pingora keeps only the path of an absolute-form target in `uri`; the whole target
    // is in the raw path.
    let target = http::Uri::try_from(request.raw_path())
        .ok()
        // Only an http(s) URL names a host to redirect to; other schemes fall back to Host.
        .filter(|uri| {
            uri.scheme_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
        })
        .and_then(|uri| uri.authority().cloned());
    target.or_else(|| {
        request
            .headers
            .get(http::header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse().ok())
    })
}

/// Whether the client asked to keep the connection open (RFC 9112, 9.3): HTTP/1.1 unless
/// it sent `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
fn client_keeps_alive(request: &RequestHeader) -> bool {
    let tokens = || {
        request
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
    };
    if tokens().any(|t| t.eq_ignore_ascii_case("close")) {
        return false;
    }
    request.version >= http::Version::HTTP_11
        || tokens().any(|t| t.eq_ignore_ascii_case("keep-alive"))
}

#[async_trait]
impl ServeHttp for RedirectToHttps {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let request = session.req_header();
        // A request with a body is answered and closed: keeping its connection would mean
        // reading that body, however large or slow, only to throw it away.
        let has_body = request
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
            || request
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|length| length.as_bytes() != b"0");
        let keep_alive = client_keeps_alive(request) && !has_body;
        let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let location = authority(request).map(|authority| match self.port {
            443 => format!("https://{}{path}", authority.host()),
            port => format!("https://{}:{port}{path}", authority.host()),
        });
        let location = location.and_then(|l| http::HeaderValue::try_from(l).ok());
        // pingora's ServeHttp keeps every connection alive unless the client said `close`,
        // an HTTP/1.0 one too: that client reads the answer to the close, and would wait
        // for ever. A request with no host to redirect to is malformed: nothing more is read.
        if !keep_alive || location.is_none() {
            session.set_keepalive(None);
        }
        match location {
            // 308 keeps the method and body, where 301 lets clients turn a POST into a GET.
            Some(location) => http::Response::builder()
                .status(http::StatusCode::PERMANENT_REDIRECT)
                .header(http::header::LOCATION, location)
                .header(http::header::CONTENT_LENGTH, 0)
                .body(Vec::new())
                .unwrap_or_default(),
            // No host to send the client to: said in the gate's JSON, like every refusal.
            None => {
                let body = br#"{"error":"invalid_request","message":"a Host header is needed to redirect to https"}"#;
                http::Response::builder()
                    .status(http::StatusCode::BAD_REQUEST)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::CONTENT_LENGTH, body.len())
                    .body(body.to_vec())
                    .unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[&str]) -> Certificate {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let issued = rcgen::generate_simple_self_signed(names).unwrap();
        Certificate::from_pem(
            issued.cert.pem().as_bytes(),
            issued.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap()
    }

    fn chosen(certs: &Certificates, name: Option<&str>) -> Vec<String> {
        let key = certs.choose(name).unwrap();
        let list = certs.current();
        list.iter()
            .find(|c| c.chain() == key.cert.as_slice())
            .unwrap()
            .names()
            .to_vec()
    }

    #[test]
    fn each_name_gets_its_certificate_and_others_the_first() {
        install_crypto_provider();
        let certs = Certificates::new(vec![
            certificate(&["a.test"]),
            certificate(&["b.test", "*.c.test"]),
        ]);
        assert_eq!(chosen(&certs, Some("a.test")), ["a.test"]);
        assert_eq!(chosen(&certs, Some("B.TEST")), ["b.test", "*.c.test"]);
        assert_eq!(chosen(&certs, Some("x.c.test")), ["b.test", "*.c.test"]);
        assert_eq!(chosen(&certs, Some("other.test")), ["a.test"]);
        assert_eq!(chosen(&certs, None), ["a.test"]);

        // Replaced in place: every clone serves the new list.
        let clone = certs.clone();
        certs.replace(vec![certificate(&["d.test"])].into());
        assert_eq!(chosen(&clone, Some("a.test")), ["d.test"]);
        assert_eq!(certs, clone);
    }

    const HTTP_10: http::Version = http::Version::HTTP_10;
    const HTTP_11: http::Version = http::Version::HTTP_11;

    fn request(
        target: &str,
        version: http::Version,
        headers: &[(&'static str, &str)],
    ) -> RequestHeader {
        let mut request = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        request.set_version(version);
        for (name, value) in headers {
            request.append_header(*name, *value).unwrap();
        }
        request
    }

    #[test]
    fn the_redirect_goes_to_the_targets_authority_else_the_host() {
        let host = |r: &RequestHeader| authority(r).map(|a| a.host().to_owned());
        let absolute = request("http://a.test:8080/x?y", HTTP_11, &[]);
        assert_eq!(host(&absolute).as_deref(), Some("a.test"));
        assert_eq!(absolute.uri.path_and_query().unwrap().as_str(), "/x?y");
        let with_host = request("/x", HTTP_10, &[("Host", "b.test:80")]);
        assert_eq!(host(&with_host).as_deref(), Some("b.test"));
        assert_eq!(host(&request("/x", HTTP_10, &[])), None);
        assert_eq!(host(&request("/x", HTTP_11, &[("Host", "a b")])), None);
        // A URL of another scheme names no host to send the client to.
        let other = request("ftp://c.test/x", HTTP_11, &[("Host", "b.test")]);
        assert_eq!(host(&other).as_deref(), Some("b.test"));
    }

    #[test]
    fn http_1_0_keeps_alive_only_when_asked_and_http_1_1_unless_told_not_to() {
        assert!(!client_keeps_alive(&request("/", HTTP_10, &[])));
        let asked = [("Connection", "Keep-Alive")];
        assert!(client_keeps_alive(&request("/", HTTP_10, &asked)));
        assert!(client_keeps_alive(&request("/", HTTP_11, &[])));
        let told = [("Connection", "upgrade, Close")];
        assert!(!client_keeps_alive(&request("/", HTTP_11, &told)));
        let both = [("Connection", "keep-alive"), ("Connection", "close")];
        assert!(!client_keeps_alive(&request("/", HTTP_10, &both)));
    }

    #[test]
    fn a_key_of_another_certificate_or_no_pem_is_refused() {
        let mine = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let cert = mine.cert.pem();
        let wrong = Certificate::from_pem(
            cert.as_bytes(),
            other.signing_key.serialize_pem().as_bytes(),
        );
        assert!(matches!(wrong, Err(CertificateError::Key(_))), "{wrong:?}");
        let none = Certificate::from_pem(b"not pem", b"");
        assert!(matches!(none, Err(CertificateError::Certificate(_))));
        let no_key = Certificate::from_pem(cert.as_bytes(), b"");
        assert!(matches!(no_key, Err(CertificateError::Key(_))));
    }
}

//! A test PKI for Redis over TLS: a CA, one certificate for every server, a client
//! certificate for the gate, and a second CA that signed nothing, as PEM files.

use std::path::PathBuf;

use otpgate::store::{RedisClientCert, RedisTls};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A test CA, one certificate for every server (for 127.0.0.1, the address the sentinels
/// announce; also shown as a client certificate when they talk to each other), a client
/// certificate for the gate, and a second CA that signed nothing; as PEM files.
pub struct Pki {
    /// The folder the PEM files are in.
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("otpgate test ca");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca.pem());
        write("other-ca.pem", &self::ca("someone else's ca").pem());

        let mut server =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "redis test server");
        // Replicas and sentinels show the servers' certificate when they connect.
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server_key = KeyPair::generate().unwrap();
        write(
            "server.pem",
            &server.signed_by(&server_key, &ca).unwrap().pem(),
        );
        write("server.key", &server_key.serialize_pem());

        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "otpgate");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        write(
            "client.pem",
            &client.signed_by(&client_key, &ca).unwrap().pem(),
        );
        write("client.key", &client_key.serialize_pem());
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// What the gate needs: the CA in `ca` and, when `with_client`, the client certificate.
    pub fn tls(&self, ca: &str, with_client: bool) -> RedisTls {
        RedisTls {
            ca_pem: Some(self.read(ca)),
            client: with_client.then(|| RedisClientCert {
                cert_pem: self.read("client.pem"),
                key_pem: self.read("client.key").into(),
            }),
        }
    }

    /// The servers' TLS settings, as `redis-server` arguments (one config line each).
    pub fn server_lines(&self) -> Vec<(&'static str, String)> {
        let file = |name: &str| self.path(name).display().to_string();
        vec![
            ("tls-cert-file", file("server.pem")),
            ("tls-key-file", file("server.key")),
            ("tls-ca-cert-file", file("ca.pem")),
            // Replication and the sentinels' links to the servers use TLS too.
            ("tls-replication", "yes".into()),
            // Redis's default, stated: a client without a certificate of the CA is refused.
            ("tls-auth-clients", "yes".into()),
        ]
    }
}

pub fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

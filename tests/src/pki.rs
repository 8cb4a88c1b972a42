//! A test PKI made by rcgen: a CA, a server certificate for 127.0.0.1/localhost, a
//! client certificate and an expired server certificate, as PEM files in a temp dir.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::TempDir;

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM
/// files in a temp dir.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    #[allow(clippy::new_without_default)] // every call makes a new CA: not a default value
    pub fn new() -> Pki {
        let dir = TempDir::new("pki");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "shv test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        for (name, sans, expired) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".into()],
                false,
            ),
            ("client", vec!["client.test".into()], false),
            (
                "expired",
                vec!["127.0.0.1".into(), "localhost".into()],
                true,
            ),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            if expired {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            let cert = params.signed_by(&key, &ca).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// A listen URL on a free port with the server certificate.
    pub fn listen(&self, extra: &str) -> String {
        self.listen_scheme("ssl", extra)
    }

    /// A `scheme://` listen URL (ssl, ssls, wss) on a free port with the server
    /// certificate.
    pub fn listen_scheme(&self, scheme: &str, extra: &str) -> String {
        format!(
            "{scheme}://127.0.0.1:0?cert={}&key={}{extra}",
            self.file("server.pem"),
            self.file("server.key")
        )
    }
}

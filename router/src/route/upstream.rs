//! How a region is reached: in the clear or over TLS (the CAs it is
//! verified against, the name sent and checked, the client certificate it
//! asks for), HTTP/1.1 or HTTP/2. Requests and health checks build their
//! peers here, so a probe goes over exactly the transport requests take.
//!
//! The PEM files are read when a topology is built (at start and on every
//! reload, which is how a rotated certificate or CA bundle is picked up);
//! nothing here runs per request but [`Transport::peer`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{CertKey, WrappedX509};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use switchyard_config::{Endpoint, Protocol, Region};
use xxhash_rust::xxh3::Xxh3;

/// Streams one HTTP/2 connection to a region carries at once.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// The TLS side of a region, loaded from its files.
struct TlsMaterial {
    sni: Option<String>,
    verify: bool,
    /// `None`: the system's roots.
    ca: Option<Arc<[WrappedX509]>>,
    client: Option<Arc<CertKey>>,
}

/// A region's transport, one per topology generation.
pub(crate) struct Transport {
    tls: TlsMaterial,
    protocol: Protocol,
    /// Pooled connections are kept apart by this: a reload that changes the
    /// CA, the client certificate or the name opens new connections rather
    /// than reusing ones made with the old material.
    group: u64,
    /// Responses keep their header names' case (`listen.preserve_header_case`).
    keep_header_case: bool,
}

impl Transport {
    /// Reads the region's TLS files (if any); every error names the key and
    /// the file.
    pub(crate) fn load(spec: &Region) -> anyhow::Result<Transport> {
        let key = |k: &str| format!("regions.{}.tls.{k}", spec.name);
        let mut group = Xxh3::new();
        group.update(spec.protocol.as_str().as_bytes());
        let tls = match &spec.tls {
            None => TlsMaterial {
                sni: None,
                verify: true,
                ca: None,
                client: None,
            },
            Some(t) => {
                group.update(&[u8::from(t.verify)]);
                if let Some(sni) = &t.sni {
                    group.update(sni.as_bytes());
                }
                let ca = match &t.ca {
                    Some(file) => {
                        let certs = read_certs(file).with_context(|| key("ca"))?;
                        for c in &certs {
                            group.update(c);
                        }
                        Some(Arc::from(
                            certs
                                .into_iter()
                                .map(|der| WrappedX509::new(der, pingora::utils::tls::parse_x509))
                                .collect::<Vec<_>>(),
                        ))
                    }
                    None => None,
                };
                let client = match &t.client_cert {
                    Some((cert_file, key_file)) => {
                        let certs = read_certs(cert_file).with_context(|| key("client_cert"))?;
                        let private = read_key(key_file).with_context(|| key("client_key"))?;
                        for c in &certs {
                            group.update(c);
                        }
                        group.update(&private);
                        Some(Arc::new(CertKey::new(certs, private)))
                    }
                    None => None,
                };
                TlsMaterial {
                    sni: t.sni.clone(),
                    verify: t.verify,
                    ca,
                    client,
                }
            }
        };
        Ok(Transport {
            tls,
            protocol: spec.protocol,
            group: group.digest(),
            keep_header_case: false,
        })
    }

    /// Whether responses read through this transport keep their header
    /// names' case; without it a response header is one map, not two.
    pub(crate) fn keeping_header_case(mut self, keep: bool) -> Transport {
        self.keep_header_case = keep;
        self
    }

    /// The peer for one attempt (or probe) to `addr`, an address of `endpoint`.
    /// Boxed where it is made: pingora takes a proxied request's peer boxed,
    /// and one made on the stack and moved in is ~670 bytes copied twice.
    pub(crate) fn peer(
        &self,
        addr: SocketAddr,
        endpoint: &Endpoint,
        connect_timeout: Duration,
        read_timeout: Option<Duration>,
        idle_timeout: Duration,
    ) -> Box<HttpPeer> {
        // The name sent (SNI) is the one verified; an address literal is
        // verified against the certificate's IP addresses.
        let sni = match (endpoint.tls, &self.tls.sni) {
            (false, _) => String::new(),
            (true, Some(name)) => name.clone(),
            (true, None) => endpoint.host.clone(),
        };
        let mut peer = Box::write(Box::new_uninit(), HttpPeer::new(addr, endpoint.tls, sni));
        let o = &mut peer.options;
        o.connection_timeout = Some(connect_timeout);
        o.total_connection_timeout = Some(connect_timeout);
        o.read_timeout = read_timeout;
        o.idle_timeout = Some(idle_timeout);
        o.normalize_header_case = !self.keep_header_case;
        o.alpn = match (self.protocol, endpoint.tls) {
            (Protocol::H1, _) | (Protocol::Auto, false) => ALPN::H1,
            (Protocol::H2, _) => ALPN::H2,
            (Protocol::Auto, true) => ALPN::H2H1,
        };
        if o.alpn != ALPN::H1 {
            o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        }
        if endpoint.tls {
            o.verify_cert = self.tls.verify;
            o.verify_hostname = self.tls.verify;
            o.ca = self.tls.ca.clone();
            peer.client_cert_key = self.tls.client.clone();
        }
        peer.group_key = self.group;
        peer
    }
}

/// Every certificate in a PEM file, each checked to parse (pingora's own
/// parser panics on one that does not).
fn read_certs(file: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let iter = CertificateDer::pem_file_iter(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    for (i, cert) in iter.enumerate() {
        let cert = cert.map_err(|e| {
            anyhow::anyhow!(
                "{}: certificate {} is not valid PEM: {e}",
                file.display(),
                i + 1
            )
        })?;
        if let Err(e) = x509_parser::parse_x509_certificate(&cert) {
            bail!(
                "{}: certificate {} does not parse: {e}",
                file.display(),
                i + 1
            );
        }
        out.push(cert.to_vec());
    }
    if out.is_empty() {
        bail!("{} holds no PEM certificate", file.display());
    }
    Ok(out)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1), as DER.
fn read_key(file: &Path) -> anyhow::Result<Vec<u8>> {
    let key = PrivateKeyDer::from_pem_file(file)
        .map_err(|e| anyhow::anyhow!("cannot read a private key from {}: {e}", file.display()))?;
    Ok(key.secret_der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(extra: &str, dir: &Path) -> Region {
        let yaml = format!(
            "listen: {{ http: 127.0.0.1:1 }}
regions:
  a:
    type: full
    endpoints: [\"https://localhost:2\"]
    services: [api]
{extra}
routing: {{ policy: weighted }}
"
        );
        let cfg = switchyard_config::parse_str(&yaml, &dir.join("c.yaml")).expect("valid");
        cfg.regions[0].clone()
    }

    fn write_ca(dir: &Path) -> std::path::PathBuf {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let file = dir.join("ca.pem");
        std::fs::write(&file, cert.pem()).expect("write");
        file
    }

    /// A folder of its own for a test, removed when the test ends.
    fn tempdir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("sy-upstream-{name}-"))
            .tempdir()
            .expect("dir")
    }

    #[test]
    fn an_https_endpoint_verifies_its_own_name_by_default() {
        let dir = tempdir("default");
        let spec = region("", dir.path());
        let t = Transport::load(&spec).expect("loads");
        let addr: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let peer = t.peer(
            addr,
            &spec.endpoints[0],
            Duration::from_secs(1),
            None,
            Duration::from_secs(1),
        );
        assert_eq!(peer.sni, "localhost");
        assert!(peer.options.verify_cert && peer.options.verify_hostname);
        assert_eq!(peer.options.alpn, ALPN::H2H1);
        assert!(peer.options.ca.is_none());
    }

    #[test]
    fn a_rotated_ca_changes_the_pool_group() {
        let dir = tempdir("rotate");
        write_ca(dir.path());
        let spec = region("    tls: { ca: ca.pem, sni: api.internal }", dir.path());
        let first = Transport::load(&spec).expect("loads");
        assert_eq!(first.tls.ca.as_ref().map(|c| c.len()), Some(1));
        write_ca(dir.path());
        let second = Transport::load(&spec).expect("loads");
        assert_ne!(first.group, second.group);
        let addr: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let peer = second.peer(
            addr,
            &spec.endpoints[0],
            Duration::from_secs(1),
            None,
            Duration::from_secs(1),
        );
        assert_eq!(peer.sni, "api.internal");
    }

    #[test]
    fn a_file_that_is_no_certificate_is_an_error_naming_the_key() {
        let dir = tempdir("garbage");
        write_ca(dir.path());
        let spec = region("    tls: { ca: ca.pem }", dir.path());
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").expect("write");
        let err = Transport::load(&spec).err().expect("refused");
        let text = format!("{err:#}");
        assert!(text.contains("regions.a.tls.ca"), "{text}");
        assert!(text.contains("no PEM certificate"), "{text}");
    }
}

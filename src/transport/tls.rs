//! TLS and QUIC configuration for peer links: loads the operator's PEM files
//! (`--peer-cert-file` and friends) or makes a self-signed certificate
//! (`--peer-auto-tls`, plain `http://` peer URLs), and builds the rustls and
//! quinn-proto configs both ends of a link use. Uses the *ring* provider only.
//!
//! It never authenticates a member: certificates prove "signed by the cluster
//! CA" at most. Member identity and the cluster token are checked by the hello
//! (see `wire`), in every mode.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{IdleTimeout, TransportConfig, VarInt};
use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{PeerIdentity, TlsSetup};

/// ALPN protocol of corekv peer links: a peer speaking anything else (an etcd
/// member, an HTTP/3 client) fails the handshake instead of sending garbage.
const ALPN: &[u8] = b"corekv-peer/1";
/// The name a dialer asks for when it does not check the server's name.
pub(crate) const AUTO_SERVER_NAME: &str = "corekv-peer";

/// Idle timeout of a link; keep-alives every [`KEEP_ALIVE`] keep a healthy,
/// quiet link open, so this only fires on a dead or partitioned peer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Before the first RTT sample: peers sit on one LAN, not across the internet.
const INITIAL_RTT: Duration = Duration::from_millis(50);
/// Per-stream receive window: bounds what a peer may have in flight on one
/// class's stream, and what one stalled class holds in memory.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// Connection receive and send windows: larger than the three data streams'
/// windows together, so a stalled snapshot stream can never use up the
/// connection's credit and block the Raft stream.
const CONNECTION_WINDOW_BYTES: u32 = 64 << 20;

/// What `build` hands the endpoint.
pub(crate) struct TlsParts {
    /// For links this node accepts.
    pub(crate) server: Arc<quinn_proto::ServerConfig>,
    /// For links this node dials.
    pub(crate) client: quinn_proto::ClientConfig,
    /// Stable across restarts of this member, secret to it: keys the QUIC
    /// stateless-reset tokens and connection-ID hashing, so a restarted member
    /// resets its peers' stale links at once instead of after an idle timeout.
    pub(crate) endpoint_secret: [u8; 32],
    /// Whether dialers must check the server certificate against the peer's
    /// name (files mode with a trusted CA).
    pub(crate) verify_server_name: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn load_certs(path: &Path, flag: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("{flag} {}: cannot read PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("{flag} {}: no certificate in the file", path.display())));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| invalid(format!("--peer-key-file {}: cannot read a PEM private key: {e}", path.display())))
}

/// The QUIC settings of peer links. `control_streams`: how many bidirectional
/// streams the other side may open (1 for the dialer's control stream on the
/// accepting side, 0 on the dialing side).
fn transport_config(control_streams: u32) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(control_streams));
    // No data streams before the hello verified: the engine raises this to
    // one per class once the peer is authenticated, so an unauthenticated
    // peer cannot make this member buffer anything but its hello.
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.max_idle_timeout(Some(IdleTimeout::try_from(IDLE_TIMEOUT).unwrap_or(IdleTimeout::from(VarInt::from_u32(5_000)))));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.initial_rtt(INITIAL_RTT);
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW_BYTES));
    t.receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES));
    t.send_window(u64::from(CONNECTION_WINDOW_BYTES));
    // One datagram per transmit: the socket is driven with plain send_to,
    // without UDP_SEGMENT (GSO) control messages.
    t.enable_segmentation_offload(false);
    // No unreliable datagrams on peer links.
    t.datagram_receive_buffer_size(None);
    Arc::new(t)
}

/// Builds the TLS/QUIC configs for `tls`, reading files where it names them.
/// Runs once at start-up (file reads are blocking and short).
pub(crate) fn build(tls: &TlsSetup, identity: &PeerIdentity) -> io::Result<TlsParts> {
    let provider = provider();
    let (certs, key, roots, client_cert_auth) = match tls {
        TlsSetup::Files { cert, key, trusted_ca, client_cert_auth } => {
            let certs = load_certs(cert, "--peer-cert-file")?;
            let key = load_key(key)?;
            let roots = match trusted_ca {
                Some(ca) => {
                    let mut store = RootCertStore::empty();
                    for c in load_certs(ca, "--peer-trusted-ca-file")? {
                        store.add(c).map_err(|e| invalid(format!("--peer-trusted-ca-file {}: {e}", ca.display())))?;
                    }
                    Some(Arc::new(store))
                }
                None if *client_cert_auth => {
                    return Err(invalid(
                        "--peer-client-cert-auth needs --peer-trusted-ca-file to check peer certificates".to_string(),
                    ));
                }
                None => None,
            };
            (certs, key, roots, *client_cert_auth)
        }
        TlsSetup::Auto => {
            let made = rcgen::generate_simple_self_signed(vec![AUTO_SERVER_NAME.to_string()])
                .map_err(|e| io::Error::other(format!("--peer-auto-tls: cannot make a certificate: {e}")))?;
            let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
                .map_err(|e| io::Error::other(format!("--peer-auto-tls: {e}")))?;
            (vec![made.cert.der().clone()], key, None, false)
        }
    };

    let endpoint_secret = endpoint_secret(tls, &key, identity);
    let tls_err = |e: rustls::Error| invalid(format!("peer TLS setup: {e}"));

    // Server side (links this member accepts).
    let server_builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let server_builder = match &roots {
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            let verifier = if client_cert_auth { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(|e| invalid(format!("--peer-trusted-ca-file: {e}")))?;
            server_builder.with_client_cert_verifier(verifier)
        }
        None => server_builder.with_no_client_auth(),
    };
    let mut server = server_builder.with_single_cert(certs.clone(), key.clone_key()).map_err(tls_err)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    server.max_early_data_size = 0;
    let server = QuicServerConfig::try_from(Arc::new(server)).map_err(|e| invalid(format!("peer TLS setup: {e}")))?;
    let mut server = quinn_proto::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport_config(1));
    server.migration(false);
    server.max_incoming(64);

    // Client side (links this member dials).
    let client_builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let verify_server_name = roots.is_some();
    let client_builder = match &roots {
        Some(roots) => client_builder.with_root_certificates(roots.clone()),
        None => client_builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServerCert(provider.clone()))),
    };
    let mut client = match tls {
        TlsSetup::Files { .. } => client_builder.with_client_auth_cert(certs, key).map_err(tls_err)?,
        TlsSetup::Auto => client_builder.with_no_client_auth(),
    };
    client.alpn_protocols = vec![ALPN.to_vec()];
    client.resumption = rustls::client::Resumption::disabled();
    client.enable_early_data = false;
    let client = QuicClientConfig::try_from(Arc::new(client)).map_err(|e| invalid(format!("peer TLS setup: {e}")))?;
    let mut client = quinn_proto::ClientConfig::new(Arc::new(client));
    client.transport_config(transport_config(0));

    Ok(TlsParts { server: Arc::new(server), client, endpoint_secret, verify_server_name })
}

/// A secret that stays the same when this member restarts with the same
/// configuration: from the private key file when there is one, else (auto
/// TLS, whose key is new each start) from the cluster token, which is the
/// shared secret of that mode anyway.
fn endpoint_secret(tls: &TlsSetup, key: &PrivateKeyDer<'_>, identity: &PeerIdentity) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"corekv peer endpoint secret v1");
    if let TlsSetup::Files { .. } = tls {
        ctx.update(key.secret_der());
    }
    ctx.update(&(identity.cluster_token.len() as u64).to_le_bytes());
    ctx.update(identity.cluster_token.as_bytes());
    ctx.update(&identity.member_id.get().to_le_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Accepts any server certificate but still checks the handshake signature
/// (so the server holds the key of the certificate it showed). Used when
/// there is no CA to check against: the hello's proof over the session's
/// exported keys is what authenticates the peer then.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Peer links are TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! RTMPS: ffmpeg publishing over TLS to a self-signed certificate made in the test, and the
//! certificate reloaded when its files change.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use contract::control::{
    ControlError, ControlPlane, EncoderEvent, PublishGrant, PublishRefusal, PublishRequest,
};
use contract::StreamId;
use futures::StreamExt;
use ingest::{Ingest, IngestConfig, TlsCert};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

struct Grant;

#[async_trait]
impl ControlPlane for Grant {
    async fn publish(&self, _request: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
        Ok(PublishGrant {
            stream_id: StreamId::generate(),
            encoder_id: "encoder-1".into(),
        })
    }
    async fn publish_ended(&self, _: &str, _: &StreamId) -> Result<(), ControlError> {
        Ok(())
    }
    async fn encoder_event(&self, _event: EncoderEvent) -> Result<(), ControlError> {
        Ok(())
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM, DER).
fn self_signed() -> (String, String, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("certificate");
    (
        certified.cert.pem(),
        certified.signing_key.serialize_pem(),
        certified.cert.der().to_vec(),
    )
}

/// Replaces a file atomically (write aside, rename), as certificate renewals do.
fn replace(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

struct Server {
    ingest: Ingest,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(cert: TlsCert) -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let ingest = Ingest::new(
        IngestConfig {
            node_id: "ingest-tls".into(),
            idle_timeout: Duration::from_secs(5),
            tls_reload_interval: Duration::from_millis(100),
            ..IngestConfig::default()
        },
        Arc::new(Grant),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let ingest = ingest.clone();
        let shutdown = shutdown.clone();
        async move { ingest.serve_rtmps(listener, cert, shutdown).await }
    });
    Server {
        ingest,
        addr,
        shutdown,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmps_to_a_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, _) = self_signed();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert).expect("write");
    std::fs::write(&key_path, key).expect("write");
    let server = start(TlsCert::load(&cert_path, &key_path).expect("valid pair")).await;

    let ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "30"])
        .args(["-c:a", "aac", "-t", "3", "-tls_verify", "0", "-f", "flv"])
        .arg(format!("rtmps://{}/demo/key", server.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs");

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let stream_id = loop {
        if let Some(p) = server.ingest.publishers().first() {
            break p.stream_id.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the RTMPS publisher went live"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let media = server.ingest.open_media(&stream_id).expect("open");
    let out = tokio::time::timeout(PATIENCE, ffmpeg.wait_with_output())
        .await
        .expect("ffmpeg ends")
        .expect("output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chunks: Vec<Bytes> = tokio::time::timeout(PATIENCE, media.collect())
        .await
        .expect("the media ends with the publisher");
    let flv = chunks.concat();
    assert_eq!(&flv[..3], b"FLV");

    let mut probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-f",
            "flv",
            "-show_streams",
            "-of",
            "json",
            "-i",
            "pipe:0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffprobe");
    let mut stdin = probe.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&flv).await;
    });
    let out = probe.wait_with_output().await.expect("ffprobe");
    let _ = writer.await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let codecs: Vec<&str> = json["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter(|s| s["codec_type"] == "video" || s["codec_type"] == "audio")
        .filter_map(|s| s["codec_name"].as_str())
        .collect();
    assert_eq!(codecs, ["h264", "aac"]);

    server.shutdown.cancel();
    server.task.await.expect("task").expect("serve");
}

/// Accepts any certificate and remembers the one it was shown.
#[derive(Debug, Default)]
struct Capture(std::sync::Mutex<Option<Vec<u8>>>);

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().expect("lock") = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate the server presents to a new connection.
async fn presented(addr: SocketAddr) -> Vec<u8> {
    let capture = Arc::new(Capture::default());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(capture.clone())
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let socket = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let _tls = tokio::time::timeout(PATIENCE, connector.connect(name, socket))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let der = capture.0.lock().expect("lock").clone();
    der.expect("a certificate was presented")
}

#[tokio::test]
async fn a_changed_certificate_is_used_by_new_connections_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_a, key_a, der_a) = self_signed();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_a).expect("write");
    std::fs::write(&key_path, &key_a).expect("write");
    let server = start(TlsCert::load(&cert_path, &key_path).expect("valid pair")).await;
    assert_eq!(presented(server.addr).await, der_a);

    // Renewal: both files replaced.
    let (cert_b, key_b, der_b) = self_signed();
    replace(&key_path, &key_b);
    replace(&cert_path, &cert_b);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while presented(server.addr).await != der_b {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate is used"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken certificate (and a key that does not match) is logged and ignored.
    replace(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(presented(server.addr).await, der_b);
    replace(&cert_path, &cert_a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        presented(server.addr).await,
        der_b,
        "cert A with key B is refused"
    );
    // The matching key arrives: the pair is valid again.
    replace(&key_path, &key_a);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while presented(server.addr).await != der_a {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fixed pair is used"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.shutdown.cancel();
    server.task.await.expect("task").expect("serve");
}

#[test]
fn a_missing_or_invalid_pair_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = TlsCert::load(dir.path().join("none.pem"), dir.path().join("none.key"));
    let err = missing.err().expect("an error").to_string();
    assert!(
        err.contains("cannot read") && err.contains("none.pem"),
        "{err}"
    );

    let (cert, _, _) = self_signed();
    let (_, other_key, _) = self_signed();
    std::fs::write(dir.path().join("c.pem"), cert).expect("write");
    std::fs::write(dir.path().join("k.pem"), other_key).expect("write");
    let err = TlsCert::load(dir.path().join("c.pem"), dir.path().join("k.pem"))
        .err()
        .expect("mismatched pair refused")
        .to_string();
    assert!(err.contains("cannot be used"), "{err}");
}

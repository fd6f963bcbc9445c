//! The HTTP router over TLS: plain requests see the peer address, and a WebSocket upgrade
//! (what `wss://` publishing is) works through the TLS connection.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use ingest::TlsCert;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn app() -> Router {
    Router::new()
        .route(
            "/who",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route(
            "/echo",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(message)) = socket.recv().await {
                        if let WsMessage::Text(text) = message {
                            let _ = socket.send(WsMessage::Text(text)).await;
                        }
                    }
                })
            }),
        )
}

async fn connect(
    addr: SocketAddr,
    der: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn https_requests_and_websocket_upgrades_work_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let der = certified.cert.der().to_vec();
    let tls = TlsCert::load(&cert, &key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ingest::https::serve_https(
        listener,
        tls,
        app(),
        ingest::https::HttpGate::default(),
        shutdown.clone(),
    ));

    // A plain request over TLS; the handler sees the peer address.
    let mut stream = connect(addr, &der).await;
    stream
        .write_all(b"GET /who HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("127.0.0.1"), "{response}");

    // A WebSocket over the same kind of connection (wss://).
    let stream = connect(addr, &der).await;
    let (mut socket, _) = tokio_tungstenite::client_async("wss://localhost/echo", stream)
        .await
        .unwrap();
    socket.send(Message::text("h")).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("h"));

    // A client that is not speaking TLS gets nothing and does not stop the server.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /who HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), plain.read(&mut buf)).await;
    // At most a TLS alert, never an HTTP answer.
    if let Ok(Ok(n)) = read {
        assert!(!buf[..n].starts_with(b"HTTP"), "no plain-text answer");
    }
    let mut again = connect(addr, &der).await;
    again
        .write_all(b"GET /who HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    again.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"));

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap();
}

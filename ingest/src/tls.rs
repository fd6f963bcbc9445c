//! TLS for RTMPS: a certificate chain and private key read from PEM files, reloaded when the
//! files change.
//!
//! [`TlsCert::watch`] polls the files' modification times and sizes; when they change, the
//! pair is loaded again and, if it is valid (the key parses and matches the certificate), new
//! connections use it; connections already open keep theirs. A broken new pair (half-written,
//! key and certificate from different pairs while a renewal is in progress) is logged and the
//! previous pair stays in use; the next change is tried again. rustls runs on the `ring`
//! provider, chosen explicitly so that the process needs no other crypto library.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found (or it is unreadable): {detail}")]
    NoKey { path: PathBuf, detail: String },
    #[error("the certificate and key cannot be used: {0}")]
    Rejected(#[from] rustls::Error),
}

/// The modification time and size of both files: a change of either triggers a reload.
type Stamp = [(Option<SystemTime>, u64); 2];

/// A certificate and key, shared by the listener and the reload task. Cheap to clone.
#[derive(Clone)]
pub struct TlsCert {
    inner: Arc<Inner>,
}

struct Inner {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    /// The stamp of the files last tried (loaded or refused).
    tried: Mutex<Stamp>,
}

impl TlsCert {
    /// Loads the pair; an error here is a configuration error (the listener cannot start).
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert.into(), key.into());
        let stamp = stamp(&cert_path, &key_path);
        let config = load_config(&cert_path, &key_path)?;
        Ok(TlsCert {
            inner: Arc::new(Inner {
                cert_path,
                key_path,
                current: RwLock::new(config),
                tried: Mutex::new(stamp),
            }),
        })
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config())
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.inner.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reloads the pair if either file changed since the last try. `Ok(true)`: new
    /// connections use the new pair; `Err`: the files changed but cannot be used (the
    /// previous pair stays).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.inner.cert_path, &self.inner.key_path);
        {
            let mut tried = self.inner.tried.lock().unwrap_or_else(|p| p.into_inner());
            if *tried == now {
                return Ok(false);
            }
            *tried = now;
        }
        let config = load_config(&self.inner.cert_path, &self.inner.key_path)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = config;
        Ok(true)
    }

    /// Polls the files every `every` until `shutdown`, reloading on change.
    pub async fn watch(&self, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let this = self.clone();
            // File reads are blocking; they are small.
            let result = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            match result {
                Ok(Ok(true)) => tracing::info!(
                    cert = %self.inner.cert_path.display(),
                    "TLS certificate reloaded; new connections use it"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(err)) => tracing::error!(
                    %err,
                    "the changed TLS certificate or key cannot be used; keeping the previous one"
                ),
                Err(err) => tracing::warn!(%err, "TLS reload task failed"),
            }
        }
    }
}

fn file_stamp(path: &Path) -> (Option<SystemTime>, u64) {
    match std::fs::metadata(path) {
        Ok(meta) => (meta.modified().ok(), meta.len()),
        Err(_) => (None, 0),
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    [file_stamp(cert), file_stamp(key)]
}

fn load_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::Read {
        path: cert_path.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::Read {
        path: key_path.to_owned(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::NoKey {
        path: key_path.to_owned(),
        detail: err.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

//! Log setup shared by every binary: `tracing` to stderr, text or JSON, `LOG_DEBUG` for debug.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides the level when set.
pub fn init(debug: bool, format: &str) {
    let level = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},hyper=info,hyper_util=info,reqwest=info,h2=info,rustls=info"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if format.eq_ignore_ascii_case("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests, embedding): keep the first.
    let _ = result;
}

/// First SIGINT/SIGTERM: cancels `shutdown` (graceful). Second: exits at once.
pub fn handle_signals(shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::error!(%err, "cannot listen for SIGTERM");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!("signal received: finishing (send it again to stop at once)");
                shutdown.cancel();
            } else {
                tracing::warn!("second signal: stopping at once");
                std::process::exit(130);
            }
        }
    });
}

/// A node ID when none is configured: the kind, the host name and the process ID.
pub fn default_node_id(kind: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "host".to_owned());
    format!("{kind}-{host}-{}", std::process::id())
}

/// The log settings every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Debug logs (YES/NO, TRUE/FALSE).
    #[arg(long, env = "LOG_DEBUG", default_value = "false", action = clap::ArgAction::Set, value_parser = contract::settings::parse_bool)]
    pub log_debug: bool,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl LogArgs {
    /// Installs the global subscriber with these settings.
    pub fn init(&self) {
        init(self.log_debug, &self.log_format);
    }
}

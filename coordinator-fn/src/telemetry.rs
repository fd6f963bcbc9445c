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

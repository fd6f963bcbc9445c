//! `bench`: the benchmarks of doc/benchmarks.md, run by hand on a quiet machine.
//!
//! Every sub-benchmark runs ours and its peer side by side in one run and prints a Markdown
//! section (exact commands, raw numbers, ratios) to paste into doc/benchmarks.md.

mod common;
mod coordinator;
mod encoder;
mod ingest;
mod latency;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "vstream benchmarks (see doc/benchmarks.md)")]
struct Cli {
    /// Where the binaries (vstream, ingest, encoder, coordinator-fn) are; default: beside this one.
    #[arg(long, env = "VSTREAM_BIN_DIR", global = true)]
    bin_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encoder CPU against one bare ffmpeg command making the same ladder; ORIGINAL pass-through.
    Encoder(encoder::Args),
    /// RTMP relay of N publishers through our ingest against nginx-rtmp.
    Ingest(ingest::Args),
    /// Publish to first HLS-LIVE, segment to playlist in S3, glass-to-glass with hls.js.
    Latency(latency::Args),
    /// Publish-decision latency and throughput of the coordinator against real Redis.
    Coordinator(coordinator::Args),
    /// Every benchmark above with its defaults, one after the other.
    All,
}

/// A sub-benchmark's arguments with their defaults.
fn defaults<T: clap::Args + clap::FromArgMatches>() -> anyhow::Result<T> {
    let matches = T::augment_args(clap::Command::new("bench")).try_get_matches_from(["bench"])?;
    Ok(T::from_arg_matches(&matches)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let bins = common::Bins::locate(cli.bin_dir)?;
    let report = match cli.command {
        Command::Encoder(args) => encoder::run(&bins, args).await?,
        Command::Ingest(args) => ingest::run(&bins, args).await?,
        Command::Latency(args) => latency::run(&bins, args).await?,
        Command::Coordinator(args) => coordinator::run(&bins, args).await?,
        Command::All => return all(&bins).await,
    };
    common::print_report(&report);
    Ok(())
}

/// Runs every benchmark; one that fails is reported and the others still run.
async fn all(bins: &common::Bins) -> anyhow::Result<()> {
    #[allow(clippy::print_stdout)]
    {
        println!(
            "Machine: {}; load before the run: {}\n",
            common::machine(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    let mut failed = Vec::new();
    for name in ["encoder", "ingest", "latency", "coordinator"] {
        eprintln!("== bench {name}");
        let report = match name {
            "encoder" => encoder::run(bins, defaults()?).await,
            "ingest" => ingest::run(bins, defaults()?).await,
            "latency" => latency::run(bins, defaults()?).await,
            _ => coordinator::run(bins, defaults()?).await,
        };
        match report {
            Ok(report) => common::print_report(&report),
            Err(err) => {
                eprintln!("bench {name} failed: {err:#}");
                failed.push(name);
            }
        }
    }
    anyhow::ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}

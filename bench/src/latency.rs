//! The latency benchmark.

use crate::common::{Bins, Report};

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_bins: &Bins, _args: Args) -> anyhow::Result<Report> {
    anyhow::bail!("the latency benchmark is not written yet")
}

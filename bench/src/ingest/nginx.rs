//! The peer: nginx with nginx-rtmp (Debian `nginx` + `libnginx-mod-rtmp`), in the foreground,
//! with its own prefix and configuration in a temporary directory, one worker process.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::common::{free_port, ChildGuard};

pub const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// The configuration (the port is the only variable).
pub fn config(dir: &Path, port: u16) -> String {
    format!(
        "load_module {MODULE};
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{
    worker_connections 16384;
}}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
        }}
    }}
}}
",
        dir = dir.display()
    )
}

pub struct Nginx {
    pub guard: ChildGuard,
    pub rtmp: SocketAddr,
    pub command: String,
    pub config: String,
}

impl Nginx {
    pub async fn start(dir: &Path) -> anyhow::Result<Nginx> {
        anyhow::ensure!(
            Path::new(MODULE).is_file(),
            "{MODULE} not found: apt-get install -y nginx libnginx-mod-rtmp"
        );
        let port = free_port()?;
        let config = config(dir, port);
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, &config)
            .with_context(|| format!("cannot write {}", conf_path.display()))?;
        let args = [
            "-p".to_owned(),
            format!("{}/", dir.display()),
            "-c".to_owned(),
            conf_path.display().to_string(),
            "-e".to_owned(),
            dir.join("nginx-error.log").display().to_string(),
        ];
        let mut cmd = std::process::Command::new("nginx");
        cmd.args(&args);
        let mut guard = ChildGuard::spawn("nginx", &mut cmd, &dir.join("nginx.log"))
            .context("nginx is needed (apt-get install -y nginx libnginx-mod-rtmp)")?;
        let rtmp = SocketAddr::from(([127, 0, 0, 1], port));
        guard.wait_for_tcp(rtmp, Duration::from_secs(10)).await?;
        Ok(Nginx {
            guard,
            rtmp,
            command: format!("nginx {}", args.join(" ")),
            config,
        })
    }
}

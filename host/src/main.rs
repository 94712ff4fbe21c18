//! `spin-sessions-host up`: run a Spin app like `spin up`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use host::reuse::{self, Range};
use host::{HostOptions, InstanceReuse, RunningHost};

/// Runs Spin HTTP apps (spin.toml, manifest version 2) on wasmtime, the way
/// `spin up` does, for the subset of Spin this project uses.
#[derive(Parser)]
#[command(name = "spin-sessions-host", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the app and serve HTTP until Ctrl-C or SIGTERM.
    Up(UpArgs),
}

/// The flags keep `spin up`'s names.
#[derive(clap::Args)]
struct UpArgs {
    /// The application manifest.
    #[arg(
        short = 'f',
        long = "from",
        alias = "file",
        default_value = "spin.toml"
    )]
    from: PathBuf,

    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// Spin's runtime configuration file (key-value stores).
    #[arg(long = "runtime-config-file")]
    runtime_config_file: Option<PathBuf>,

    /// Where the default key-value store lives (default: `.spin` beside the
    /// manifest).
    #[arg(long = "state-dir")]
    state_dir: Option<PathBuf>,

    /// Do not log a line per request.
    #[arg(long)]
    quiet: bool,

    /// Maximum number of requests to send to a single component instance
    /// before dropping it (WASI 0.3 components; WASI 0.2 ones get a fresh
    /// instance per request). An integer or a range, e.g. 1..8, sampled for
    /// each new instance. [default: 128]
    #[arg(long, value_parser = reuse::parse_count_range)]
    max_instance_reuse_count: Option<Range<usize>>,

    /// Maximum number of concurrent requests to send to a single component
    /// instance (WASI 0.3). An integer or a range, sampled per instance.
    /// [default: 16]
    #[arg(long, value_parser = reuse::parse_count_range)]
    max_instance_concurrent_reuse_count: Option<Range<usize>>,

    /// Request timeout to enforce (WASI 0.3 components only): seconds, or a
    /// number suffixed by `s`, `ms`, `us`, `μs` or `ns`, or a range of them,
    /// e.g. 1..8s, sampled per instance. [default: none]
    #[arg(long, value_parser = reuse::parse_duration_range)]
    request_timeout: Option<Range<Duration>>,

    /// Time to hold an idle component instance for possible reuse before
    /// dropping it (WASI 0.3): a duration or a range, as --request-timeout.
    #[arg(long, default_value = "1s", value_parser = reuse::parse_duration_range)]
    idle_instance_timeout: Range<Duration>,
}

impl UpArgs {
    /// The reuse flags, Spin's defaults where unset.
    fn instance_reuse(&self) -> InstanceReuse {
        let defaults = InstanceReuse::default();
        InstanceReuse {
            max_instance_reuse_count: self
                .max_instance_reuse_count
                .unwrap_or(defaults.max_instance_reuse_count),
            max_instance_concurrent_reuse_count: self
                .max_instance_concurrent_reuse_count
                .unwrap_or(defaults.max_instance_concurrent_reuse_count),
            request_timeout: self.request_timeout,
            idle_instance_timeout: self.idle_instance_timeout,
        }
    }
}

fn print_startup(host: &RunningHost) {
    let base = format!("http://{}", host.addr());
    for line in host.startup_messages() {
        println!("{line}");
    }
    // The same lines `spin up` prints, so scripts that read them work here.
    println!();
    println!("Serving {base}");
    println!("Available Routes:");
    for route in host.routes() {
        println!("  {}: {base}{}", route.component, route.route);
        if let Some(description) = &route.description {
            println!("    {description}");
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let instance_reuse = args.instance_reuse();
    let opts = HostOptions {
        manifest: args.from,
        listen: args.listen,
        runtime_config_file: args.runtime_config_file,
        state_dir: args.state_dir,
        variable_env: None,
        quiet: args.quiet,
        instance_reuse,
    };
    let host = host::start(opts).await?;
    print_startup(&host);
    stop_signal().await;
    eprintln!("spin-sessions-host: shutting down");
    host.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Up(args) => runtime.block_on(up(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_args(flags: &[&str]) -> Result<UpArgs, clap::Error> {
        let argv = ["spin-sessions-host", "up"].iter().chain(flags);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Up(args) => args,
        })
    }

    #[test]
    fn reuse_flags_default_to_spins() {
        let args = up_args(&[]).unwrap();
        assert_eq!(args.instance_reuse(), InstanceReuse::default());
    }

    #[test]
    fn reuse_flags_take_values_and_ranges() {
        let args = up_args(&[
            "--max-instance-reuse-count",
            "1",
            "--max-instance-concurrent-reuse-count",
            "2..5",
            "--request-timeout",
            "1..8s",
            "--idle-instance-timeout",
            "250ms",
        ])
        .unwrap();
        assert_eq!(
            args.instance_reuse(),
            InstanceReuse {
                max_instance_reuse_count: Range::Value(1),
                max_instance_concurrent_reuse_count: Range::Bounds(2, 5),
                request_timeout: Some(Range::Bounds(
                    Duration::from_secs(1),
                    Duration::from_secs(8)
                )),
                idle_instance_timeout: Range::Value(Duration::from_millis(250)),
            }
        );
    }

    #[test]
    fn bad_reuse_flags_are_refused_with_the_reason() {
        for (flag, value, reason) in [
            (
                "--max-instance-reuse-count",
                "many",
                "expected integer or range; got \"many\"",
            ),
            (
                "--max-instance-concurrent-reuse-count",
                "4..4",
                "empty range",
            ),
            (
                "--request-timeout",
                "1.5s",
                "expected integer suffixed by `s`",
            ),
            ("--idle-instance-timeout", "1m", "got \"1m\""),
        ] {
            let err = match up_args(&[flag, value]) {
                Ok(_) => panic!("{flag} {value} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(flag), "{err}");
            assert!(err.contains(reason), "{err}");
        }
    }
}

//! `spin-sessions-host up`: run a Spin app like `spin up`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use host::{HostOptions, RunningHost};

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
    let opts = HostOptions {
        manifest: args.from,
        listen: args.listen,
        runtime_config_file: args.runtime_config_file,
        state_dir: args.state_dir,
        variable_env: None,
        quiet: args.quiet,
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

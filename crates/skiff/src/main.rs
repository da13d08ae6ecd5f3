//! The `skiff` binary: command-line parsing and wiring of the components.

mod agent;
mod cli;
mod join;
mod kubeconfig;
mod node_network;
mod pki;
mod server;
mod tls;
mod token;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};

/// mimalloc rather than glibc's allocator: the API server and controllers
/// allocate many short-lived JSON values from many threads, where glibc's
/// arenas fragment (resident memory grows well past the live data) and its
/// locking shows in profiles. Built without its transparent-huge-page advice
/// (feature `no_thp`): faulting in 2 MiB pages cost more than it saved on the
/// machines measured (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Killall(args) => server::killall(&args.data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skiff: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

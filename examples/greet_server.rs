//! A standalone greet backend, handy for trying the load balancer against
//! real processes:
//!
//! ```text
//! cargo run --example greet_server -- --port 7001 --name greet-1
//! cargo run --example greet_server -- --port 7002
//! ```
//!
//! Listens on 127.0.0.1 and runs until Ctrl-C.

#[path = "support/greet.rs"]
mod greet;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use greet::GreetServer;

const USAGE: &str = "usage: greet_server [--port PORT] [--name NAME]

  --port PORT   TCP port on 127.0.0.1 (default 7001)
  --name NAME   instance name sent as `x-instance` (default greet-<port>)
  -h, --help    show this help";

/// Parsed command line.
struct Args {
    port: u16,
    name: Option<String>,
}

/// What the command line asks for.
enum Command {
    Run(Args),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut parsed = Args {
        port: 7001,
        name: None,
    };
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--port" => {
                let raw = value("--port")?;
                parsed.port = raw
                    .parse()
                    .map_err(|_| format!("invalid port {raw:?}: expected 0-65535"))?;
            }
            "--name" => {
                let name = value("--name")?;
                if name.is_empty() {
                    return Err("--name must not be empty".to_owned());
                }
                parsed.name = Some(name);
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Command::Run(parsed))
}

/// Command-line arguments as UTF-8 strings (`std::env::args` would panic on
/// anything else).
fn utf8_args() -> Result<Vec<String>, String> {
    std::env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| format!("argument {arg:?} is not valid UTF-8"))
        })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match utf8_args().and_then(|args| parse_args(args.into_iter())) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("error: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let name = args.name.unwrap_or_else(|| format!("greet-{}", args.port));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let server = match GreetServer::start_on(addr, &name).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };

    println!("{} listening on {}", server.name(), server.url());
    println!("  try: curl '{}/api/greet?name=Alice'", server.url());
    println!("press Ctrl-C to stop");

    if let Err(err) = tokio::signal::ctrl_c().await {
        eprintln!("error: cannot wait for Ctrl-C: {err}");
    }
    let hits = server.hits();
    server.stop().await;
    println!("{name} stopped after {hits} request(s)");
    ExitCode::SUCCESS
}

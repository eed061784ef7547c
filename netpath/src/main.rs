use std::{process::ExitCode, time::Duration};

use anyhow::{Result, bail};
use clap::Parser as _;
use netpath::{
    cli::{Cli, Command, ConntrackCommand, NetworkCommand},
    commands::{self, Ctx, conntrack, container, host, network, publish, stats, status},
    model::conntrack::Filter,
    system::netns,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors get one line like every other error; help and version print as usual.
        Err(e) if e.use_stderr() => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or_default();
            eprintln!("netpath: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netpath: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("must run as root (netpath needs CAP_NET_ADMIN and CAP_BPF)");
    }
    // Before any thread exists, so that every thread netpath starts lives in the namespace.
    if let Some(ns) = &cli.netns {
        netns::enter_named(ns)?;
    }
    let scope = commands::scope(cli.netns.as_deref())?;
    if let Command::Exec { name, command } = &cli.command {
        match container::exec(&scope, name, command)? {}
    }
    // Without the scope's lock: stats only reads, and --watch would hold it until Ctrl-C.
    if let Command::Stats {
        json,
        watch,
        prometheus,
    } = cli.command
    {
        let format = match (json, prometheus) {
            (true, _) => stats::Format::Json,
            (_, true) => stats::Format::Prometheus,
            _ => stats::Format::Table,
        };
        return stats::stats(&scope, format, watch.map(Duration::from_secs));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // `up` without -d goes on in the foreground once its state is saved and unlocked.
    let foreground = match &cli.command {
        Command::Up {
            detach: false,
            gc_interval,
            log_level,
            ..
        } => Some((Duration::from_secs(*gc_interval), *log_level)),
        _ => None,
    };
    runtime.block_on(async {
        let mut ctx = Ctx::open(&scope)?;
        let result = dispatch(&mut ctx, cli.command).await;
        // Saved even after a failure: commands change the state only for what they completed.
        let saved = ctx.finish();
        result.and(saved)?;
        match foreground {
            Some((gc_interval, log_level)) => {
                host::foreground(&scope, gc_interval, log_level).await
            }
            None => Ok(()),
        }
    })
}

async fn dispatch(ctx: &mut Ctx, command: Command) -> Result<()> {
    match command {
        Command::Up {
            detach: _,
            gc_interval: _,
            log_level,
            bridge,
            publish,
            external,
            masquerade_exclude,
            masquerade_ports,
        } => {
            host::up(
                ctx,
                bridge,
                publish,
                external,
                &masquerade_exclude,
                masquerade_ports,
                log_level,
            )
            .await
        }
        Command::Down => host::down(ctx).await,
        Command::Network(NetworkCommand::Create {
            name,
            subnet,
            gateway,
            bridge,
        }) => network::create(ctx, &name, subnet, gateway, bridge).await,
        Command::Network(NetworkCommand::Ls { json }) => network::ls(ctx, json).await,
        Command::Network(NetworkCommand::Rm { name }) => network::rm(ctx, &name).await,
        Command::Run {
            name,
            network,
            ip,
            mode,
            dns,
            publish: ports,
        } => container::run(ctx, &name, &network, ip, &mode, &dns, &ports).await,
        Command::Publish { specs, from_file } => {
            publish::publish(ctx, specs, from_file.as_deref()).await
        }
        Command::Unpublish { specs, from_file } => {
            publish::unpublish(ctx, specs, from_file.as_deref()).await
        }
        Command::Connect { name, network, ip } => {
            container::connect(ctx, &name, &network, ip).await
        }
        Command::Rm { name } => container::rm(ctx, &name).await,
        Command::Ps { json } => container::ps(ctx, json).await,
        Command::Status { json } => status::status(ctx, json).await,
        Command::Conntrack {
            command: Some(ConntrackCommand::Flush),
            ..
        } => conntrack::flush(ctx),
        Command::Conntrack {
            command: None,
            json,
            proto,
            addr,
            port,
        } => conntrack::list(ctx, json, &Filter { proto, addr, port }),
        Command::Exec { .. } | Command::Stats { .. } => {
            unreachable!("exec and stats run before the runtime starts")
        }
    }
}

use std::{
    io::{self, Write},
    process::ExitCode,
};

use anyhow::{Result, bail};
use clap::Parser as _;
use netpath::{
    cli::{Cli, Command, ConntrackCommand, NetworkCommand},
    commands::{
        self, Ctx, TeardownError, conntrack, container, docker, host, network, publish, stats,
        status,
    },
    output::{self, Format, OutputError, Response},
    system::netns,
};

#[expect(
    clippy::print_stderr,
    reason = "the one place that reports a failure, as one line"
)]
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
    let mut stdout = io::stdout().lock();
    let Err(e) = run(cli, &mut stdout) else {
        return ExitCode::SUCCESS;
    };
    match e.downcast_ref::<OutputError>() {
        // The reader went away (`netpath ps | head -1`): its choice, not a failure.
        Some(out) if out.is_closed_pipe() => return ExitCode::SUCCESS,
        Some(_) => {}
        // What a failed teardown did remove is output like a successful one's.
        None => {
            if let Some(t) = e.downcast_ref::<TeardownError>() {
                let done = Response::Done(t.done.clone());
                let _ = output::write(&mut stdout, &done, Format::Table);
            }
        }
    }
    eprintln!("netpath: {e:#}");
    ExitCode::FAILURE
}

fn run(cli: Cli, out: &mut impl Write) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("must run as root (netpath needs CAP_NET_ADMIN and CAP_BPF)");
    }
    // Before any thread exists, so that every thread netpath starts lives in the namespace.
    if let Some(ns) = &cli.netns {
        netns::enter_named(ns)?;
    }
    let scope = commands::scope(cli.netns.as_deref())?;
    let format = cli.command.format();
    match cli.command {
        Command::Exec(args) => match container::exec(&scope, &args)? {},
        // Without the scope's lock: stats only reads, and --watch would hold it until Ctrl-C.
        Command::Stats(args) => return stats::stats(&scope, &args, format, out),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Long-running: each call of the protocol takes the lock like a command.
    if let Command::DockerPlugin(args) = &cli.command {
        return runtime.block_on(docker::serve(&scope, &args.name, out));
    }
    // `up` without -d goes on in the foreground once its state is saved and unlocked.
    let foreground = match &cli.command {
        Command::Up(args) if !args.detach => Some((args.gc_interval, args.log_level)),
        _ => None,
    };
    runtime.block_on(async {
        let mut ctx = Ctx::open(&scope)?;
        let result = dispatch(&mut ctx, cli.command).await;
        // Saved even after a failure: commands change the state only for what they completed.
        let saved = ctx.finish();
        let response = result?;
        saved?;
        output::write(out, &response, format)?;
        match foreground {
            Some((gc_interval, log_level)) => {
                host::foreground(&scope, gc_interval, log_level, out).await
            }
            None => Ok(()),
        }
    })
}

async fn dispatch(ctx: &mut Ctx, command: Command) -> Result<Response> {
    match command {
        Command::Up(args) => host::up(ctx, args).await,
        Command::Down => host::down(ctx).await,
        Command::Network(NetworkCommand::Create(args)) => network::create(ctx, args).await,
        Command::Network(NetworkCommand::Ls(_)) => network::ls(ctx),
        Command::Network(NetworkCommand::Rm { name }) => network::rm(ctx, &name).await,
        Command::Run(args) => container::run(ctx, args).await,
        Command::Publish(args) => publish::publish(ctx, args).await,
        Command::Unpublish(args) => publish::unpublish(ctx, args).await,
        Command::Connect(args) => container::connect(ctx, args).await,
        Command::Rm { name } => container::rm(ctx, &name).await,
        Command::Ps(_) => container::ps(ctx),
        Command::Status(_) => status::status(ctx).await,
        Command::Conntrack(args) => match args.command {
            Some(ConntrackCommand::Flush) => conntrack::flush(ctx),
            None => conntrack::list(ctx, &args),
        },
        Command::Exec(_) | Command::Stats(_) | Command::DockerPlugin(_) => {
            unreachable!("exec, stats and docker-plugin run without a command's lock")
        }
    }
}

//! netpath as a CNI plugin: the runtime gives the command and the pod in CNI_* variables and
//! the network configuration on stdin; the result or the spec's error goes to stdout. The
//! logic is in `netpath::commands::cni`.
use std::{
    io::{self, Read as _},
    process::ExitCode,
};

use netpath::{
    commands::cni::{self, Answer, Env},
    output,
};

fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    // VERSION may come without a configuration.
    if env.command != "VERSION" || !nix::unistd::isatty(io::stdin()).unwrap_or(false) {
        let _ = io::stdin().read_to_end(&mut stdin);
    }
    let mut stdout = io::stdout().lock();
    let (written, code) = match cni::main(&env, &stdin) {
        Ok(Answer::Nothing) => (output::cni(&mut stdout, None::<&Answer>), ExitCode::SUCCESS),
        Ok(answer) => (output::cni(&mut stdout, Some(&answer)), ExitCode::SUCCESS),
        Err(e) => (output::cni(&mut stdout, Some(&e)), ExitCode::FAILURE),
    };
    match written {
        Ok(()) => code,
        Err(_) => ExitCode::FAILURE,
    }
}

//! `vigil completions SHELL` and `vigil man`: generated from the same clap definition that
//! parses the command line, so they never fall behind it.

use super::Exit;
use clap_complete::Shell;
use std::io::Write;

/// Prints the completion script for `shell` on stdout.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> Exit {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "vigil", &mut out);
    emit(&out)
}

/// Prints the man page (roff) on stdout: `vigil man | man -l -`.
pub fn man(cmd: clap::Command) -> Exit {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    emit(&out)
}

/// Writes to stdout; a reader that stopped early (`| head`) is not an error.
fn emit(bytes: &[u8]) -> Exit {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

//! `vigil completions SHELL` and `vigil man`: generated from the same clap definition that
//! parses the command line, so they never fall behind it.

use super::Exit;
use clap_complete::Shell;

/// Prints the completion script for `shell` on stdout.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> Exit {
    clap_complete::generate(shell, &mut cmd, "vigil", &mut std::io::stdout());
    Ok(0)
}

/// Prints the man page (roff) on stdout: `vigil man | man -l -`.
pub fn man(cmd: clap::Command) -> Exit {
    clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
    Ok(0)
}

//! Command line: parse, set up the process, dispatch to `cli`, print
//! errors. The commands themselves live in `src/cli/`.

use std::process::ExitCode;

use clap::Parser;

use undercloud_live::cli::{Cli, Command, Ctx};
use undercloud_live::interrupt;

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_code(run(cli))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Before any thread exists: mounts made later then live only in this
    // process's namespace.
    cli.command.process().enter()?;
    let ctx = Ctx::new(cli.quiet);
    match cli.command {
        Command::Build(args) => args.run(&ctx),
        Command::Cache(command) => command.run(&ctx),
        Command::Verify(args) => args.run(&ctx),
        Command::Inspect(args) => args.run(&ctx),
        Command::Fetch(args) => args.run(&ctx),
        Command::Assemble(args) => args.run(&ctx),
        Command::Elements(command) => command.run(&ctx),
        Command::Medium(command) => command.run(&ctx),
        Command::Ramdisk(command) => command.run(&ctx),
        Command::Boot(args) => args.run(&ctx),
        Command::Install(args) => args.run(&ctx),
        Command::Status(args) => args.run(&ctx),
        Command::Undercloud(command) => command.run(&ctx),
        Command::Devices(args) => args.run(&ctx),
        Command::Write(args) => args.run(&ctx),
    }
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    let Some(sig) = interrupt::signal() else {
        // One line: the contexts joined with ": ". Multi-line
        // details (console tails) follow on their own lines.
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    };
    // Work stopped by the signal: its contexts ("reading x.part")
    // say only where it stopped. Other errors (a write's "first MiB
    // zeroed") are kept. 128 + the signal, as a shell reports a
    // process the signal killed.
    if interrupt::is_interrupt(&e) {
        eprintln!("error: interrupted by {sig}");
    } else {
        eprintln!("error: {e:#}");
    }
    ExitCode::from(128 + sig as u8)
}

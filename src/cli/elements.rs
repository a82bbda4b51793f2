//! `elements apply|plan|deps|show`: diskimage-builder elements outside a
//! build.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use crate::elements::apply;
use crate::elements::hooks::Phase;
use crate::spec::Distro;

#[derive(Subcommand)]
pub enum ElementsCommand {
    /// Run elements on a running (`--target /`) or installed system (a
    /// root folder, entered with a chroot).
    Apply(ApplyArgs),
    /// What will run, in what order, from which element. Reads only:
    /// environment.d files (for `when:` filters) run in a sandbox that sees
    /// the elements, /usr and /etc read-only, and no network.
    Plan(PlanArgs),
    /// The expanded element set and where each element comes from.
    Deps(DepsArgs),
    /// One element: its files, dependencies and what it does.
    Show(ShowArgs),
}

/// Which elements, and where to find them.
#[derive(Args)]
pub struct SelectionArgs {
    /// Elements, as disk-image-create takes them (dependencies are added).
    #[arg(value_name = "ELEMENT")]
    names: Vec<String>,
    /// Element to apply (repeatable; the same as naming it).
    #[arg(long = "element", short = 'e')]
    elements: Vec<String>,
    /// Leave this element out, with what only it needed (repeatable).
    #[arg(long = "exclude-element", short = 'x')]
    exclude_elements: Vec<String>,
    /// Element folder searched before ELEMENTS_PATH (repeatable).
    #[arg(long = "elements-path")]
    elements_path: Vec<PathBuf>,
    /// Distro of the target (default: from its os-release).
    #[arg(long, value_enum)]
    distro: Option<Distro>,
    /// Release (DIB_RELEASE; default: from the target's os-release).
    #[arg(long)]
    release: Option<String>,
    /// A kickstart, applied as one more element after the others.
    #[arg(long)]
    kickstart: Option<PathBuf>,
    /// YAML map from the kickstart's package names to the target's.
    #[arg(long)]
    kickstart_package_map: Option<PathBuf>,
    /// IMAGE_NAME for the hooks.
    #[arg(long)]
    image_name: Option<String>,
    /// DIB_IMAGE_CACHE for the hooks.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Tell hooks not to download (DIB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
}

impl From<SelectionArgs> for apply::Selection {
    fn from(a: SelectionArgs) -> apply::Selection {
        // Positional names first, then -e ones: breadth-first order follows
        // the list, and a command line uses one form or the other.
        let mut elements = a.names;
        elements.extend(a.elements);
        apply::Selection {
            elements,
            exclude: a.exclude_elements,
            elements_path: a.elements_path,
            distro: a.distro,
            release: a.release,
            kickstart: a.kickstart,
            kickstart_package_map: a.kickstart_package_map,
            image_name: a.image_name,
            cache_dir: a.cache_dir,
            offline: a.offline,
        }
    }
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    sel: SelectionArgs,
    /// The system's root folder.
    #[arg(long)]
    target: PathBuf,
    /// Phases to run, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    phases: Vec<String>,
    /// Leave out this hook (NAME or PHASE/NAME; repeatable).
    #[arg(long = "exclude-hook")]
    exclude_hooks: Vec<String>,
    /// Print the plan and change nothing (environment.d files run in a
    /// sandbox that cannot write the host).
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Also write hook output to this file.
    #[arg(long)]
    log: Option<PathBuf>,
}

impl TryFrom<ApplyArgs> for apply::ApplyOptions {
    type Error = anyhow::Error;

    /// Fails on an unknown phase name.
    fn try_from(a: ApplyArgs) -> Result<apply::ApplyOptions> {
        Ok(apply::ApplyOptions {
            phases: parse_phases(&a.phases)?,
            selection: a.sel.into(),
            target: a.target,
            exclude_hooks: a.exclude_hooks,
            dry_run: a.dry_run,
            log: a.log,
        })
    }
}

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    sel: SelectionArgs,
    /// Phases to show, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    phases: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DepsArgs {
    #[command(flatten)]
    sel: SelectionArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    name: String,
    #[command(flatten)]
    sel: SelectionArgs,
    #[arg(long)]
    json: bool,
}

impl ElementsCommand {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match self {
            ElementsCommand::Apply(a) => {
                let opts = apply::ApplyOptions::try_from(a)?;
                apply::apply(&opts, &ctx.progress)
            }
            ElementsCommand::Plan(a) => {
                let phases = parse_phases(&a.phases)?;
                print!("{}", apply::plan(&a.sel.into(), &phases, a.json)?);
                Ok(())
            }
            ElementsCommand::Deps(a) => {
                print!("{}", apply::deps(&a.sel.into(), a.json)?);
                Ok(())
            }
            ElementsCommand::Show(a) => {
                print!("{}", apply::show(&a.sel.into(), &a.name, a.json)?);
                Ok(())
            }
        }
    }
}

/// `--phases` names (`install` or `install.d`), as the hook folders are
/// named.
fn parse_phases(names: &[String]) -> Result<Vec<Phase>> {
    names
        .iter()
        .map(|n| {
            Phase::from_dir(n.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--phases: unknown phase {n:?} (one of {})",
                    Phase::ALL.map(|p| p.dir()).join(", ")
                )
            })
        })
        .collect()
}

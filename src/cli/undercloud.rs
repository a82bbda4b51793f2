//! Inside the image: `status`, `undercloud configure|enroll`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use crate::status;
use crate::undercloud::{configure, nodes};

#[derive(Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Keep checking up to this many seconds until everything is up.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
}

impl StatusArgs {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        let report = status::status(self.wait.map(Duration::from_secs))?;
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report)
                    .map_err(|e| anyhow::anyhow!("encoding the report: {e}"))?
            );
        } else {
            print!("{}", status::render_table(&report));
        }
        if !report.ready {
            anyhow::bail!("{}", status::summary(&report));
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum UndercloudCommand {
    /// Read undercloud.yaml (the live medium's ESP, else /etc/undercloud,
    /// else defaults), check it, write ironic.conf, dnsmasq, nginx, network
    /// and ~stack/undercloudrc.
    Configure(ConfigureArgs),
    /// Enrol the nodes of nodes.yaml (the live medium's ESP, else
    /// /etc/undercloud) into Ironic; nodes Ironic knows by name are left
    /// alone. Runs at every boot. Calls the API as OS_USERNAME with
    /// OS_PASSWORD when set (a sourced ~stack/undercloudrc), else, as root,
    /// as the configured API user.
    Enroll(EnrollArgs),
}

#[derive(Args)]
pub struct ConfigureArgs {
    /// Use this undercloud.yaml instead of looking for one.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The root to configure.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Check the file and print what would be written; write nothing.
    #[arg(long)]
    dry_run: bool,
}

impl From<ConfigureArgs> for configure::Options {
    fn from(a: ConfigureArgs) -> configure::Options {
        configure::Options {
            root: a.root,
            config: a.config,
            dry_run: a.dry_run,
        }
    }
}

#[derive(Args)]
pub struct EnrollArgs {
    /// Use this nodes.yaml instead of looking for one.
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// Ironic's API [default: the undercloud's (api= in
    /// /etc/undercloud/endpoints: https with ironic.tls), else
    /// http://127.0.0.1:6385].
    #[arg(long)]
    api: Option<String>,
    /// Seconds to wait for the API to answer.
    #[arg(long, default_value_t = 600)]
    wait: u64,
    /// Check the file and list its nodes; enrol nothing.
    #[arg(long)]
    check: bool,
}

impl From<EnrollArgs> for nodes::Options {
    fn from(a: EnrollArgs) -> nodes::Options {
        nodes::Options {
            nodes: a.nodes,
            api: a.api,
            wait: Duration::from_secs(a.wait),
            check: a.check,
        }
    }
}

impl UndercloudCommand {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        // A dry run or a check is asked for its output: printed even with
        // --quiet.
        let (out, asked) = match self {
            UndercloudCommand::Configure(a) => {
                let asked = a.dry_run;
                (configure::configure(&a.into())?, asked)
            }
            UndercloudCommand::Enroll(a) => {
                let asked = a.check;
                (nodes::run(&a.into())?, asked)
            }
        };
        if !ctx.quiet || asked {
            print!("{out}");
        }
        Ok(())
    }
}

//! The kickstart commands that configure the system, one method each,
//! applied the way livecd-creator (imgcreate) applies them, or warned
//! about where it cannot be done here.

use anyhow::{bail, Context, Result};

use super::{
    check_name, check_value, Args, Bootloader, Firewall, Group, Keyboard, Loc, Module, Parser,
    Password, Repo, RepoSource, RootPw, Timezone, User, XConfig,
};

impl Parser<'_> {
    pub(super) fn lang(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        args.only(&["--addsupport"])?;
        let lang = args.one_positional("a language such as en_US.UTF-8")?;
        check_value(&lang)?;
        let extra = args.all("--addsupport");
        if !extra.is_empty() {
            // Anaconda installs language packs for these; livecd-creator
            // writes LANG only, and so do we.
            self.warn(
                loc,
                format!(
                    "lang --addsupport={} not applied (livecd-creator does not either): list the language packages in %packages",
                    extra.join(",")
                ),
            );
        }
        self.ks.lang = Some((loc.clone(), lang));
        Ok(())
    }

    pub(super) fn keyboard(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        args.only(&["--vckeymap", "--xlayouts", "--switch"])?;
        let mut kb = Keyboard {
            keymap: args.value("--vckeymap"),
            xlayouts: args.list("--xlayouts"),
            switch: args.all("--switch"),
        };
        if let Some(p) = args.positional.first() {
            kb.keymap.get_or_insert_with(|| p.clone());
            if kb.xlayouts.is_empty() {
                kb.xlayouts.push(p.clone());
            }
        }
        if kb.keymap.is_none() && kb.xlayouts.is_empty() {
            bail!("needs a layout");
        }
        for v in kb.keymap.iter().chain(&kb.xlayouts).chain(&kb.switch) {
            check_value(v)?;
        }
        self.ks.keyboard = Some((loc.clone(), kb));
        Ok(())
    }

    pub(super) fn timezone(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        args.only(&["--utc", "--isUtc", "--nontp", "--ntpservers"])?;
        let zone = args.one_positional("a zone such as Europe/Berlin")?;
        if zone.contains("..")
            || zone.starts_with('/')
            || !zone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
        {
            bail!("{zone:?} is not a time zone name");
        }
        let servers = args.all("--ntpservers");
        if !servers.is_empty() {
            self.warn(
                loc,
                format!(
                    "timezone --ntpservers={} not applied (livecd-creator does not either): configure the time service in a %post",
                    servers.join(",")
                ),
            );
        }
        let tz = Timezone {
            zone,
            utc: args.flag("--utc") || args.flag("--isUtc"),
            nontp: args.flag("--nontp"),
        };
        self.ks.timezone = Some((loc.clone(), tz));
        Ok(())
    }

    pub(super) fn rootpw(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        args.only(&["--iscrypted", "--plaintext", "--lock", "--allow-ssh"])?;
        let lock = args.flag("--lock");
        let pw = args.positional.first().cloned();
        if pw.is_none() && !lock {
            bail!("needs a password or --lock");
        }
        if args.positional.len() > 1 {
            bail!("takes one password (quote it if it has spaces)");
        }
        let password = pw.map(|p| {
            if args.flag("--iscrypted") {
                Password::Crypted(p)
            } else {
                Password::Plain(p)
            }
        });
        let pw = RootPw {
            password,
            lock,
            allow_ssh: args.flag("--allow-ssh"),
        };
        self.ks.rootpw = Some((loc.clone(), pw));
        Ok(())
    }

    /// pykickstart's GroupData: a group made before the users.
    pub(super) fn group(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        args.only(&["--name", "--gid"])?;
        let name = args.value("--name").context("needs --name")?;
        check_name(&name)?;
        let gid = match args.value("--gid") {
            Some(g) => Some(g.parse().with_context(|| format!("--gid={g}"))?),
            None => None,
        };
        self.ks.groups.push((loc.clone(), Group { name, gid }));
        Ok(())
    }

    /// livecd-creator reads `--append` (the live medium's kernel command
    /// line) and `--timeout` (its menu); the rest is the installer's.
    pub(super) fn bootloader(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        let append: Vec<String> = args
            .value("--append")
            .map(|a| a.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        for a in &append {
            crate::spec::validate_kernel_arg(a).context("--append")?;
        }
        let timeout = match args.value("--timeout") {
            Some(t) => Some(t.parse().with_context(|| format!("--timeout={t}"))?),
            None => None,
        };
        let others = args.others(&["--append", "--timeout"]);
        if !others.is_empty() {
            self.warn(
                loc,
                format!(
                    "bootloader {} ignored: the build makes the live medium's boot loader (livecd-creator reads only --append and --timeout too)",
                    others.join(", ")
                ),
            );
        }
        if !append.is_empty() || timeout.is_some() {
            self.ks.bootloader = Some((loc.clone(), Bootloader { append, timeout }));
        }
        Ok(())
    }

    /// imgcreate's FirewallConfig: firewall-offline-cmd in the root.
    pub(super) fn firewall(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        args.only(&[
            "--enabled",
            "--enable",
            "--disabled",
            "--disable",
            "--trust",
            "--port",
            "--service",
            "--ssh",
            "--smtp",
            "--http",
            "--ftp",
            "--telnet",
            "--remove-service",
            "--use-system-defaults",
        ])?;
        let mut services = args.all("--service");
        for s in ["ssh", "smtp", "http", "ftp", "telnet"] {
            if args.flag(&format!("--{s}")) {
                services.push(s.to_string());
            }
        }
        let fw = Firewall {
            enabled: !(args.flag("--disabled") || args.flag("--disable")),
            trusts: args.all("--trust"),
            ports: args.all("--port"),
            services,
        };
        for v in fw.trusts.iter().chain(&fw.ports).chain(&fw.services) {
            check_value(v)?;
        }
        for o in ["--remove-service", "--use-system-defaults"] {
            if args.has(o) {
                self.warn(
                    loc,
                    format!("firewall {o} ignored (livecd-creator ignores it too)"),
                );
            }
        }
        self.ks.firewall = Some((loc.clone(), fw));
        Ok(())
    }

    /// imgcreate's XConfig: `--startxonboot` makes graphical.target the
    /// default, `--defaultdesktop` writes /etc/sysconfig/desktop.
    pub(super) fn xconfig(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        let x = XConfig {
            startx: args.flag("--startxonboot"),
            default_desktop: args.value("--defaultdesktop"),
        };
        if let Some(d) = &x.default_desktop {
            check_value(d)?;
        }
        let others = args.others(&["--startxonboot", "--defaultdesktop"]);
        if !others.is_empty() {
            self.warn(
                loc,
                format!(
                    "xconfig {} ignored: X configures itself (livecd-creator ignores it too)",
                    others.join(", ")
                ),
            );
        }
        self.ks.xconfig = Some((loc.clone(), x));
        Ok(())
    }

    /// A DNF module to enable (or `--disable`) before the packages, as
    /// livecd-creator does.
    pub(super) fn module(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        args.only(&["--name", "--stream", "--disable"])?;
        let name = args.value("--name").context("needs --name")?;
        check_name(&name)?;
        let stream = args.value("--stream");
        if let Some(s) = &stream {
            check_name(s)?;
        }
        let enable = !args.flag("--disable");
        self.ks.modules.push((
            loc.clone(),
            Module {
                name,
                stream,
                enable,
            },
        ));
        Ok(())
    }

    /// livecd-creator sizes its ext4 root image by `part / --size`; other
    /// partitions mean nothing to it.
    pub(super) fn part(&mut self, loc: &Loc, cmd: &str, args: &Args) -> Result<()> {
        if args.positional.first().map(String::as_str) != Some("/") {
            self.warn(
                loc,
                format!("{cmd} ignored: it means nothing for a live image"),
            );
            return Ok(());
        }
        let size = args.value("--size");
        let fstype = args.value("--fstype");
        if size.is_none() && fstype.is_none() {
            return Ok(());
        }
        self.warn(
            loc,
            format!(
                "{cmd} /{}{} not used: livecd-creator makes the root an ext4 image of that size inside its squashfs; this build's live root is a squashfs or EROFS of the tree, sized to its content (for format: disk, set disk.size in the spec)",
                size.map(|s| format!(" --size={s}")).unwrap_or_default(),
                fstype.map(|f| format!(" --fstype={f}")).unwrap_or_default(),
            ),
        );
        Ok(())
    }

    /// `user`: an account made after the groups.
    pub(super) fn user(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        args.only(&[
            "--name",
            "--groups",
            "--password",
            "--iscrypted",
            "--plaintext",
            "--homedir",
            "--shell",
            "--uid",
            "--gid",
            "--gecos",
            "--lock",
        ])?;
        let name = args.value("--name").context("needs --name")?;
        check_name(&name)?;
        let groups = args.list("--groups");
        for g in &groups {
            check_name(g)?;
        }
        let uid = match args.value("--uid") {
            Some(u) => Some(u.parse().with_context(|| format!("--uid={u}"))?),
            None => None,
        };
        if args.value("--gid").is_some() {
            self.warn(
                loc,
                "user --gid is ignored: the user gets its own group".into(),
            );
        }
        let password = args.value("--password").map(|p| {
            if args.flag("--iscrypted") {
                Password::Crypted(p)
            } else {
                Password::Plain(p)
            }
        });
        self.ks.users.push((
            loc.clone(),
            User {
                name,
                groups,
                password,
                homedir: args.value("--homedir"),
                shell: args.value("--shell"),
                uid,
                gecos: args.value("--gecos"),
                lock: args.flag("--lock"),
            },
        ));
        Ok(())
    }

    /// `services`: units to enable and disable.
    pub(super) fn services(&mut self, args: &Args) -> Result<()> {
        args.only(&["--enabled", "--disabled"])?;
        let enabled = args.list("--enabled");
        let disabled = args.list("--disabled");
        if enabled.is_empty() && disabled.is_empty() {
            bail!("needs --enabled or --disabled");
        }
        for s in enabled.iter().chain(disabled.iter()) {
            check_value(s)?;
        }
        self.ks.services_enabled.extend(enabled);
        self.ks.services_disabled.extend(disabled);
        Ok(())
    }

    /// `network`: the host name; the rest is the live system's at boot.
    pub(super) fn network(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        if let Some(h) = args.value("--hostname") {
            if h.is_empty()
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                bail!("--hostname={h:?} is not a host name");
            }
            self.ks.hostname = Some((loc.clone(), h));
        }
        let others: Vec<&str> = args
            .opts
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k != "--hostname")
            .collect();
        if !others.is_empty() {
            self.warn(
                loc,
                format!(
                    "network: only --hostname is used by a live image; {} ignored (the live system configures its network at boot)",
                    others.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// `repo`: a package source for the build.
    pub(super) fn repo(&mut self, loc: &Loc, args: &Args) -> Result<()> {
        args.only(&[
            "--name",
            "--baseurl",
            "--mirrorlist",
            "--metalink",
            "--cost",
            "--excludepkgs",
            "--includepkgs",
            "--proxy",
            "--noverifyssl",
            "--install",
            "--ignoregroups",
            "--sslcacert",
            "--sslclientcert",
            "--sslclientkey",
        ])?;
        let name = args.value("--name").context("needs --name")?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            bail!("--name={name:?}: use letters, digits, '-', '_', '.' and ':'");
        }
        let sources: Vec<RepoSource> = [
            args.value("--baseurl").map(RepoSource::BaseUrl),
            args.value("--mirrorlist").map(RepoSource::Mirrorlist),
            args.value("--metalink").map(RepoSource::Metalink),
        ]
        .into_iter()
        .flatten()
        .collect();
        let [source] = <[RepoSource; 1]>::try_from(sources).map_err(|_| {
            anyhow::anyhow!("needs exactly one of --baseurl, --mirrorlist, --metalink")
        })?;
        let cost = match args.value("--cost") {
            Some(c) => Some(c.parse().with_context(|| format!("--cost={c}"))?),
            None => None,
        };
        for o in [
            "--sslcacert",
            "--sslclientcert",
            "--sslclientkey",
            "--install",
            "--ignoregroups",
        ] {
            if args.has(o) {
                self.warn(loc, format!("repo {o} is ignored"));
            }
        }
        self.ks.repos.push((
            loc.clone(),
            Repo {
                name,
                source,
                cost,
                excludepkgs: args.list("--excludepkgs"),
                includepkgs: args.list("--includepkgs"),
                proxy: args.value("--proxy"),
                noverifyssl: args.flag("--noverifyssl"),
            },
        ));
        Ok(())
    }
}

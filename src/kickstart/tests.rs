//! Parser and translation tests over kickstarts written in the style of
//! Fedora's livecd kickstarts (fedora-live-base.ks and the spins that
//! include it).

use super::translate::{self, PackageList, PackageMap};
use super::*;
use crate::spec::Distro;

/// A base file in the style of fedora-live-base.ks.
const BASE: &str = r#"# live-base.ks
#
# The basics every spin shares; spins %include it and add packages.

lang en_US.UTF-8
keyboard us
timezone US/Eastern
auth --useshadow --passalgo=sha512
selinux --enforcing
firewall --enabled --service=mdns
xconfig --startxonboot
zerombr
clearpart --all
part / --size 5120 --fstype ext4
services --enabled=NetworkManager,ModemManager --disabled=sshd
network --bootproto=dhcp --device=link --activate
rootpw --lock --iscrypted locked
shutdown

%include live-repo.ks

%packages
@base-x
@core
@standard
kernel
kernel-modules-extra   # needed for some wifi cards

# The point of a live image is to install
anaconda
dracut-live
%end

%post
# livesys: written by the kickstart, like Fedora's
cat > /etc/rc.d/init.d/livesys << EOF
#!/bin/bash
if [ "\$1" != "start" ]; then
    exit 0
fi
%if this-is-not-a-section
%endif
EOF
%end

%post --nochroot
cp $INSTALL_ROOT/usr/share/licenses/*-release/* $LIVE_ROOT/
%end
"#;

const REPO: &str = r#"repo --name=fedora --mirrorlist=https://mirrors.fedoraproject.org/mirrorlist?repo=fedora-$releasever&arch=$basearch
repo --name=updates \
     --mirrorlist=https://mirrors.fedoraproject.org/mirrorlist?repo=updates-released-f$releasever&arch=$basearch \
     --cost=50
#repo --name=updates-testing --mirrorlist=https://example/testing
"#;

const SPIN: &str = r#"# spin.ks: a small spin on top of live-base.ks
%include live-base.ks

network --hostname=undercloud-live
user --name=stack --groups=wheel --password="s3cret pw" --gecos="Stack User"
services --enabled=chronyd

%packages --excludedocs
@networkmanager-submodules
openstack-tripleo
-@dial-up
-anaconda         # not for an undercloud
-kernel-modules-extra
%end

%post --interpreter=/usr/bin/python3 --erroronfail --log=/root/ks-post.log
print("hello from python")
%end
"#;

fn fixture() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("live-base.ks"), BASE).unwrap();
    fs::write(t.path().join("live-repo.ks"), REPO).unwrap();
    fs::write(t.path().join("spin.ks"), SPIN).unwrap();
    let spin = t.path().join("spin.ks");
    (t, spin)
}

use std::fs;

#[test]
fn parses_a_fedora_style_spin() {
    let (_t, spin) = fixture();
    let ks = parse_file(&spin).map_err(|e| format!("{e:#}")).unwrap();
    assert_eq!(ks.lang.as_ref().unwrap().1, "en_US.UTF-8");
    assert_eq!(
        ks.keyboard.as_ref().unwrap().1.keymap.as_deref(),
        Some("us")
    );
    assert_eq!(ks.timezone.as_ref().unwrap().1.zone, "US/Eastern");
    assert_eq!(ks.selinux.as_ref().unwrap().1, Selinux::Enforcing);
    let root = &ks.rootpw.as_ref().unwrap().1;
    assert!(root.lock);
    assert_eq!(root.password, Some(Password::Crypted("locked".into())));
    assert_eq!(
        ks.services_enabled,
        ["NetworkManager", "ModemManager", "chronyd"]
    );
    assert_eq!(ks.services_disabled, ["sshd"]);
    assert_eq!(ks.hostname.as_ref().unwrap().1, "undercloud-live");
    let (uloc, u) = &ks.users[0];
    assert_eq!(u.name, "stack");
    assert_eq!(u.groups, ["wheel"]);
    assert_eq!(u.password, Some(Password::Plain("s3cret pw".into())));
    assert_eq!(u.gecos.as_deref(), Some("Stack User"));
    assert!(uloc.file.ends_with("spin.ks") && uloc.line == 5, "{uloc}");

    // Repos from the included file, one with a continued line; the
    // commented-out one is not there.
    assert_eq!(ks.repos.len(), 2);
    let (rloc, updates) = &ks.repos[1];
    assert_eq!(updates.name, "updates");
    assert_eq!(updates.cost, Some(50));
    assert!(matches!(&updates.source, RepoSource::Mirrorlist(u) if u.contains("updates-released")));
    assert!(
        rloc.file.ends_with("live-repo.ks") && rloc.line == 2,
        "{rloc}"
    );

    // %packages from both files, merged; options from the spin.
    assert!(ks.packages.excludedocs);
    assert!(!ks.packages.nocore);
    let items: Vec<&PackageItem> = ks.packages.items.iter().map(|(_, i)| i).collect();
    assert!(items.contains(&&PackageItem::Group("base-x".into())));
    assert!(items.contains(&&PackageItem::Package("kernel-modules-extra".into())));
    assert!(items.contains(&&PackageItem::ExcludeGroup("dial-up".into())));
    assert!(items.contains(&&PackageItem::Exclude("anaconda".into())));

    // %post bodies are verbatim, including lines starting with %.
    assert_eq!(ks.posts.len(), 3);
    assert!(ks.posts[0]
        .body
        .contains("%if this-is-not-a-section\n%endif\nEOF\n"));
    assert!(ks.posts[0].body.contains("\"\\$1\""));
    assert!(ks.posts[1].nochroot);
    let py = &ks.posts[2];
    assert_eq!(py.interpreter.as_deref(), Some("/usr/bin/python3"));
    assert!(py.erroronfail);
    assert_eq!(py.log.as_deref(), Some("/root/ks-post.log"));
    assert_eq!(py.body, "print(\"hello from python\")\n");

    // Applied as imgcreate applies them: no warning.
    let (_, fw) = ks.firewall.as_ref().unwrap();
    assert!(fw.enabled && fw.services == ["mdns"]);
    assert!(ks.xconfig.as_ref().unwrap().1.startx);
    // `part / --size`: said why it is not used.
    assert!(
        ks.warnings.iter().any(|w| w.contains(
            "live-base.ks:14: part / --size=5120 --fstype=ext4 not used: livecd-creator makes the root an ext4 image of that size"
        )),
        "{:#?}",
        ks.warnings
    );
    // One warning per command with no meaning for a live image.
    for cmd in ["auth", "zerombr", "clearpart", "shutdown"] {
        let n = ks
            .warnings
            .iter()
            .filter(|w| w.contains(&format!(": {cmd} ignored")))
            .count();
        assert_eq!(n, 1, "{cmd}: {:#?}", ks.warnings);
    }
    assert!(ks
        .warnings
        .iter()
        .any(|w| w.contains("live-base.ks:16: network") && w.contains("--bootproto")));
}

#[test]
fn packages_through_a_map_for_debian() {
    let (t, spin) = fixture();
    let ks = parse_file(&spin).unwrap();
    let map = t.path().join("map.yaml");
    fs::write(
        &map,
        "\"@core\": [systemd-sysv, udev]\n\"@base-x\": ~\n\"@standard\": [less]\n\"@networkmanager-submodules\": []\nkernel: linux-image-amd64\nkernel-modules-extra: []\nopenstack-tripleo: python3-tripleo-common\nanaconda: [anaconda-debian]\n",
    )
    .unwrap();
    let map = PackageMap::load(&map).unwrap();
    let list = translate::package_list(&ks, Distro::Debian, &map).unwrap();
    assert_eq!(
        list,
        PackageList {
            install: vec![
                "systemd-sysv".into(),
                "udev".into(),
                "less".into(),
                "linux-image-amd64".into(),
                "dracut-live".into(),
                "python3-tripleo-common".into(),
            ],
            exclude: vec![],
        }
    );
    // The same on Fedora without a map: groups go to dnf, exclusions too.
    let list = translate::package_list(&ks, Distro::Fedora, &PackageMap::default()).unwrap();
    assert_eq!(list.install[0], "@core");
    assert!(list.install.contains(&"@base-x".to_string()));
    assert!(!list.install.contains(&"anaconda".to_string()));
    assert_eq!(list.exclude, ["anaconda", "kernel-modules-extra"]);
}

#[test]
fn unmapped_group_on_debian_names_its_line() {
    let (_t, spin) = fixture();
    let ks = parse_file(&spin).unwrap();
    let e = format!(
        "{:#}",
        translate::package_list(&ks, Distro::Debian, &PackageMap::default()).unwrap_err()
    );
    assert!(e.contains("live-base.ks:23: group @base-x"), "{e}");
}

#[test]
fn generates_an_element() {
    let (t, spin) = fixture();
    let ks = parse_file(&spin).unwrap();
    let map = t.path().join("map.yaml");
    fs::write(
        &map,
        "\"@core\": []\n\"@base-x\": []\n\"@standard\": []\n\"@networkmanager-submodules\": []\n",
    )
    .unwrap();
    let map = PackageMap::load(&map).unwrap();
    let el = t.path().join("el");
    translate::generate(&ks, Distro::Debian, "bookworm", &map, &el).unwrap();
    let read = |p: &str| fs::read_to_string(el.join(p)).unwrap();
    assert_eq!(read("static/etc/hostname"), "undercloud-live\n");
    assert_eq!(read("static/etc/locale.conf"), "LANG=en_US.UTF-8\n");
    assert_eq!(read("static/etc/timezone"), "US/Eastern\n");
    assert_eq!(
        fs::read_link(el.join("static/etc/localtime")).unwrap(),
        PathBuf::from("../usr/share/zoneinfo/US/Eastern")
    );
    let pkgs = read("package-installs.yaml");
    assert!(
        pkgs.contains("\"kernel\":\n") && !pkgs.contains("anaconda"),
        "{pkgs}"
    );
    let apt = read("kickstart-files/apt/undercloud-live-kickstart-updates.list");
    assert!(
        apt.contains("deb mirror+https://mirrors.fedoraproject.org/mirrorlist?repo=updates-released-f$releasever&arch=$basearch bookworm main"),
        "{apt}"
    );
    assert!(read("kickstart-files/dpkg-excludedocs").contains("path-exclude=/usr/share/doc/*"));
    // repo lines are the build's package sources only, as livecd-creator's:
    // copied in before the packages, taken out after the %post scripts.
    let prepare = read("pre-install.d/05-kickstart-prepare");
    assert!(
        prepare.contains("cp \"$files\"/apt/undercloud-live-kickstart-updates.list /etc/apt/sources.list.d/undercloud-live-kickstart-updates.list"),
        "{prepare}"
    );
    let cleanup = read("post-install.d/99-kickstart-cleanup");
    assert!(
        cleanup.contains("rm -f /etc/apt/sources.list.d/undercloud-live-kickstart-updates.list")
            && cleanup
                .contains("rm -f /etc/apt/sources.list.d/undercloud-live-kickstart-fedora.list"),
        "{cleanup}"
    );
    assert!(!el.join("static/etc/apt").exists());
    let cfg = read("post-install.d/10-kickstart-config");
    assert!(
        cfg.contains("usermod -p 'locked' root") && cfg.contains("passwd -l root"),
        "{cfg}"
    );
    assert!(
        cfg.contains("printf '%s\\n' 'stack:s3cret pw' | chpasswd"),
        "{cfg}"
    );
    assert!(
        cfg.contains("useradd -m -G 'wheel' -c 'Stack User' 'stack'"),
        "{cfg}"
    );
    assert!(cfg.contains("systemctl disable 'sshd'"), "{cfg}");
    assert!(read("post-install.d/kickstart-post-01.script").starts_with("#!/bin/sh\n# livesys"));
    assert!(read("post-install.d/outside/90-kickstart-post-02")
        .contains("INSTALL_ROOT=\"$TARGET_ROOT\""));
    let py = read("post-install.d/90-kickstart-post-03");
    assert!(
        py.contains("tee -a '/root/ks-post.log'") && py.contains("exit \"$rc\""),
        "{py}"
    );
    assert!(read("post-install.d/kickstart-post-03.script").starts_with("#!/usr/bin/python3\n"));
    let warn = read("post-install.d/90-kickstart-post-01");
    assert!(warn.contains("going on (no --erroronfail)"), "{warn}");

    // Fedora: a .repo file and the dnf drop-in.
    let el = t.path().join("el-fedora");
    translate::generate(&ks, Distro::Fedora, "43", &PackageMap::default(), &el).unwrap();
    let repo =
        fs::read_to_string(el.join("kickstart-files/yum/undercloud-live-kickstart-updates.repo"))
            .unwrap();
    assert!(
        repo.contains("[updates]\nname=updates\nmirrorlist=https://") && repo.contains("cost=50")
    );
    let dnf = fs::read_to_string(el.join("kickstart-files/dnf.conf")).unwrap();
    assert_eq!(
        dnf,
        "[main]\ntsflags=nodocs\nexcludepkgs=anaconda,kernel-modules-extra\n"
    );
    let cleanup = fs::read_to_string(el.join("post-install.d/99-kickstart-cleanup")).unwrap();
    assert!(
        cleanup.contains("rm -f /etc/yum.repos.d/undercloud-live-kickstart-updates.repo")
            && cleanup.contains("rm -f /etc/dnf/libdnf5.conf.d/90-undercloud-live-kickstart.conf"),
        "{cleanup}"
    );
}

#[test]
fn errors_name_file_and_line() {
    let t = tempfile::tempdir().unwrap();
    let cases = [
        (
            "lang en_US\nbogus --x\n",
            "a.ks:2",
            "unknown kickstart command \"bogus\"",
        ),
        ("selinux --enforcing\ntimezone\n", "a.ks:2", "needs a zone"),
        ("%packages\nvim\n", "a.ks", "%packages is not closed"),
        (
            "\n\n%post --nochroot\necho\n",
            "a.ks:3",
            "%post is not closed",
        ),
        ("%post --bogus\n%end\n", "a.ks:1", "unknown option --bogus"),
        ("%end\n", "a.ks:1", "%end without a section"),
        ("%include missing.ks\n", "a.ks:1", "%include"),
        ("%include a.ks\n", "a.ks:1", "includes itself"),
        ("user --groups=wheel\n", "a.ks:1", "needs --name"),
        ("lang \"en_US\n", "a.ks:1", "unclosed double quote"),
        ("repo --name=x\n", "a.ks:1", "exactly one of --baseurl"),
        ("%pre\necho\n", "a.ks:1", "%pre is not closed"),
        (
            "%packages --bogus\n%end\n",
            "a.ks:1",
            "unknown option --bogus",
        ),
    ];
    for (text, at, what) in cases {
        let f = t.path().join("a.ks");
        fs::write(&f, text).unwrap();
        let e = format!("{:#}", parse_file(&f).unwrap_err());
        assert!(e.contains(at) && e.contains(what), "{text:?}: {e}");
    }
}

#[test]
fn words_quotes_comments_and_continuations() {
    assert_eq!(
        split_words(r#"user --name=a --gecos="A \"B\" C" 'x y' # comment"#).unwrap(),
        ["user", "--name=a", "--gecos=A \"B\" C", "x y"]
    );
    assert_eq!(
        split_words("  # only a comment").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(split_words("a#b c").unwrap(), ["a#b", "c"]);
    let ks = parse_str(
        "services \\\n  --enabled=a,b \\\n  --disabled=c\ntimezone --utc Europe/Berlin\nrootpw --plaintext 'p w'\n",
        Path::new("/x/inline.ks"),
    )
    .unwrap();
    assert_eq!(ks.services_enabled, ["a", "b"]);
    assert_eq!(ks.services_disabled, ["c"]);
    let tz = &ks.timezone.as_ref().unwrap().1;
    assert!(tz.utc && tz.zone == "Europe/Berlin");
    assert_eq!(
        ks.rootpw.unwrap().1.password,
        Some(Password::Plain("p w".into()))
    );
    let (loc, _) = ks.timezone.unwrap();
    assert_eq!(loc.to_string(), "/x/inline.ks:4");
}

#[test]
fn special_files_are_refused_as_kickstarts_and_includes() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("pipe.ks");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (target, is) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
        (t.path(), "a directory"),
    ] {
        // As the kickstart itself (build --kickstart PATH) ...
        let e = format!("{:#}", parse_file(target).unwrap_err());
        assert!(e.contains(is) && !e.contains('\n'), "{e}");
        // ... and as an %include.
        let f = t.path().join("a.ks");
        fs::write(&f, format!("%include {}\n", target.display())).unwrap();
        let e = format!("{:#}", parse_file(&f).unwrap_err());
        assert!(e.contains("a.ks:1") && e.contains(is), "{e}");
    }
}

#[test]
fn oversized_include_is_refused_naming_the_limit() {
    let t = tempfile::tempdir().unwrap();
    let big = t.path().join("big.ks");
    let line = "# a comment line that pads this kickstart out to its limit\n";
    let text = line.repeat((MAX_KICKSTART_BYTES as usize / line.len()) + 1);
    fs::write(&big, text).unwrap();
    let f = t.path().join("a.ks");
    fs::write(&f, "%include big.ks\n").unwrap();
    let e = format!("{:#}", parse_file(&f).unwrap_err());
    assert!(e.contains("a.ks:1") && e.contains("4 MiB limit"), "{e}");
}

/// `%include` of a file that is not a kickstart (a shadow file) names
/// file:line but never quotes the file's content.
#[test]
fn errors_do_not_echo_included_content() {
    let t = tempfile::tempdir().unwrap();
    let shadow = t.path().join("shadow");
    let f = t.path().join("a.ks");
    for line in [
        "root:$y$j9T$secrethash:19000:0:99999:7:::",
        "Secrethash",
        "%packages --Secrethash=1",
        "%post --Secrethash",
    ] {
        fs::write(&shadow, format!("{line}\n")).unwrap();
        fs::write(&f, "lang en_US.UTF-8\n%include shadow\n").unwrap();
        let e = format!("{:#}", parse_file(&f).unwrap_err());
        assert!(e.contains("shadow:1"), "{line}: {e}");
        assert!(!e.to_lowercase().contains("secrethash"), "{line}: {e}");
    }
    // Keyword-like words are still named.
    fs::write(&f, "bogus\n").unwrap();
    let e = format!("{:#}", parse_file(&f).unwrap_err());
    assert!(e.contains("unknown kickstart command \"bogus\""), "{e}");
}

/// Parse `text` as `t/cmd.ks` and generate its element for `distro`.
fn generated(text: &str, distro: Distro) -> (tempfile::TempDir, Kickstart, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let ks = parse_str(text, &t.path().join("cmd.ks"))
        .map_err(|e| format!("{e:#}"))
        .unwrap();
    let el = t.path().join("el");
    translate::generate(&ks, distro, "bookworm", &PackageMap::default(), &el).unwrap();
    (t, ks, el)
}

fn parse_err(text: &str) -> String {
    format!("{:#}", parse_str(text, Path::new("/k/cmd.ks")).unwrap_err())
}

#[test]
fn lang_addsupport_both_forms_are_parsed_and_warned_about() {
    for text in [
        "lang en_US.UTF-8 --addsupport de_DE.UTF-8,fr_FR.UTF-8\n",
        "lang en_US.UTF-8 --addsupport=de_DE.UTF-8,fr_FR.UTF-8\n",
        "lang --addsupport de_DE.UTF-8,fr_FR.UTF-8 en_US.UTF-8\n",
    ] {
        let ks = parse_str(text, Path::new("/k/cmd.ks")).unwrap();
        assert_eq!(ks.lang.as_ref().unwrap().1, "en_US.UTF-8", "{text}");
        assert_eq!(
            ks.warnings,
            ["/k/cmd.ks:1: lang --addsupport=de_DE.UTF-8,fr_FR.UTF-8 not applied (livecd-creator does not either): list the language packages in %packages"]
        );
    }
}

#[test]
fn rootpw_allow_ssh_permits_root_login() {
    let (_t, _, el) = generated("rootpw --plaintext --allow-ssh pw\n", Distro::Debian);
    let conf = fs::read_to_string(el.join("static/etc/ssh/sshd_config.d/01-permitrootlogin.conf"))
        .unwrap();
    assert!(conf.ends_with("PermitRootLogin yes\n"), "{conf}");
    let (_t, _, el) = generated("rootpw --plaintext pw\n", Distro::Debian);
    assert!(!el.join("static/etc/ssh").exists());
}

#[test]
fn timezone_ntp_options_and_the_zone_check() {
    let (_t, ks, el) = generated(
        "\ntimezone Europe/Berlin --utc --nontp --ntpservers=ntp1.example,ntp2.example\n",
        Distro::Debian,
    );
    assert_eq!(
        ks.warnings,
        ["{}:2: timezone --ntpservers=ntp1.example,ntp2.example not applied (livecd-creator does not either): configure the time service in a %post"
            .replace("{}", &ks.file.display().to_string())]
    );
    let cfg = fs::read_to_string(el.join("post-install.d/10-kickstart-config")).unwrap();
    assert!(
        cfg.contains("systemctl disable \"$u\"") && cfg.contains("systemd-timesyncd.service"),
        "{cfg}"
    );
    // A zone the root lacks stops the build, naming the kickstart line.
    let check = format!(
        "if [ ! -e '/usr/share/zoneinfo/Europe/Berlin' ]; then\n    echo '{}:2: timezone Europe/Berlin: the root has no /usr/share/zoneinfo/Europe/Berlin (not a zone of its tzdata, or tzdata is not installed)' >&2\n    exit 1\nfi\n",
        ks.file.display()
    );
    assert!(cfg.contains(&check), "{cfg}");
    let e = parse_err("timezone /etc/shadow\n");
    assert!(
        e.contains("cmd.ks:1: timezone: \"/etc/shadow\" is not a time zone name"),
        "{e}"
    );
}

/// The zone check runs: a missing zone fails with the kickstart's line.
#[test]
fn timezone_check_fails_without_the_zone() {
    let (t, ks, el) = generated("timezone Nowhere/Atlantis_Missing\n", Distro::Debian);
    let cfg = fs::read_to_string(el.join("post-install.d/10-kickstart-config")).unwrap();
    let script: String = cfg.lines().take(8).collect::<Vec<_>>().join("\n") + "\n";
    let f = t.path().join("check.sh");
    fs::write(&f, script).unwrap();
    let o = std::process::Command::new("/bin/bash")
        .arg(&f)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:1: timezone Nowhere/Atlantis_Missing: the root has no",
            ks.file.display()
        )),
        "{err}"
    );
}

#[test]
fn keyboard_switch_is_xkb_options() {
    let (_t, ks, el) = generated(
        "keyboard --vckeymap=de --xlayouts=de,us --switch=grp:alt_shift_toggle\n",
        Distro::Debian,
    );
    assert!(ks.warnings.is_empty(), "{:?}", ks.warnings);
    let vc = fs::read_to_string(el.join("static/etc/vconsole.conf")).unwrap();
    assert_eq!(
        vc,
        "KEYMAP=de\nXKBLAYOUT=de\nXKBOPTIONS=grp:alt_shift_toggle\n"
    );
    let kb = fs::read_to_string(el.join("static/etc/default/keyboard")).unwrap();
    assert!(kb.contains("XKBOPTIONS=\"grp:alt_shift_toggle\""), "{kb}");
}

#[test]
fn group_is_made_before_the_users() {
    let (_t, _, el) = generated(
        "user --name=stack --groups=ops\ngroup --name=ops --gid=2001\n",
        Distro::Debian,
    );
    let cfg = fs::read_to_string(el.join("post-install.d/10-kickstart-config")).unwrap();
    let g = cfg
        .find("if ! getent group 'ops' >/dev/null; then\n    groupadd -g 2001 'ops'\nfi\n")
        .expect(&cfg);
    let u = cfg.find("useradd -m -G 'ops'").expect(&cfg);
    assert!(g < u, "{cfg}");
    let e = parse_err("group --gid=5\n");
    assert!(e.contains("cmd.ks:1: group: needs --name"), "{e}");
    let e = parse_err("\ngroup --name=ops --gid=x\n");
    assert!(e.contains("cmd.ks:2: group: --gid=x"), "{e}");
}

#[test]
fn bootloader_append_and_timeout_reach_the_spec() {
    let ks = parse_str(
        "bootloader --location=mbr --append=\"console=ttyS0 rd.shell\" --timeout=12\n",
        Path::new("/k/cmd.ks"),
    )
    .unwrap();
    let (_, b) = ks.bootloader.as_ref().unwrap();
    assert_eq!(b.append, ["console=ttyS0", "rd.shell"]);
    assert_eq!(b.timeout, Some(12));
    assert_eq!(
        ks.warnings,
        ["/k/cmd.ks:1: bootloader --location ignored: the build makes the live medium's boot loader (livecd-creator reads only --append and --timeout too)"]
    );
    let mut spec = crate::spec::parse(
        "name: m\nlabel: M\nbase:\n  distro: debian\n  release: bookworm\n  url: http://127.0.0.1:1/r.tar.xz\n  checksum_url: http://127.0.0.1:1/SHA256SUMS\nkernel_cmdline: [quiet]\n",
    )
    .unwrap();
    translate::apply_bootloader(&mut spec, &ks);
    assert_eq!(spec.kernel_cmdline, ["quiet", "console=ttyS0", "rd.shell"]);
    assert_eq!(spec.boot.timeout, 12);
    // What GRUB would interpret is refused, at its line.
    let e = parse_err("\nbootloader --append=\"a=$(reboot)\"\n");
    assert!(
        e.contains("cmd.ks:2: bootloader: --append: kernel_cmdline:"),
        "{e}"
    );
}

#[test]
fn firewall_runs_firewall_offline_cmd_or_warns() {
    let (_t, ks, el) = generated(
        "firewall --enabled --service=mdns,ssh --port=8080:tcp --trust=eth0 --trust eth1 --http\n",
        Distro::Debian,
    );
    assert!(ks.warnings.is_empty(), "{:?}", ks.warnings);
    let cfg = fs::read_to_string(el.join("post-install.d/10-kickstart-config")).unwrap();
    assert!(
        cfg.contains("firewall-offline-cmd '--enabled' '--trust=eth0' '--trust=eth1' '--port=8080:tcp' '--service=mdns' '--service=ssh' '--service=http'\n"),
        "{cfg}"
    );
    assert!(
        cfg.contains("firewall: firewalld is not installed (firewall-offline-cmd), ignoring the firewall configuration, as livecd-creator does"),
        "{cfg}"
    );
    let (_t, _, el) = generated("firewall --disabled\n", Distro::Fedora);
    let cfg = fs::read_to_string(el.join("post-install.d/10-kickstart-config")).unwrap();
    assert!(cfg.contains("firewall-offline-cmd '--disabled'\n"), "{cfg}");
}

#[test]
fn xconfig_startxonboot_makes_graphical_the_default() {
    let (_t, ks, el) = generated(
        "xconfig --startxonboot --defaultdesktop=GNOME --driver=vesa\n",
        Distro::Fedora,
    );
    let cfg = fs::read_to_string(el.join("post-install.d/10-kickstart-config")).unwrap();
    assert!(
        cfg.contains(
            "ln -sfn /lib/systemd/system/graphical.target /etc/systemd/system/default.target"
        ),
        "{cfg}"
    );
    assert_eq!(
        fs::read_to_string(el.join("static/etc/sysconfig/desktop")).unwrap(),
        "DESKTOP=GNOME\n"
    );
    assert!(
        ks.warnings[0].ends_with(
            ":1: xconfig --driver ignored: X configures itself (livecd-creator ignores it too)"
        ),
        "{:?}",
        ks.warnings
    );
}

#[test]
fn module_is_enabled_before_packages_on_fedora_warned_on_debian() {
    let text = "module --name=nodejs --stream=20\nmodule --name=perl --disable\n";
    let (_t, ks, el) = generated(text, Distro::Fedora);
    let prep = fs::read_to_string(el.join("pre-install.d/05-kickstart-prepare")).unwrap();
    assert!(
        prep.contains("dnf -y module enable 'nodejs:20'\n")
            && prep.contains("dnf -y module disable 'perl'\n"),
        "{prep}"
    );
    assert!(translate::warnings(&ks, Distro::Fedora).is_empty());
    let (_t, ks, el) = generated(text, Distro::Debian);
    assert!(!el.join("pre-install.d/05-kickstart-prepare").exists());
    let w = translate::warnings(&ks, Distro::Debian);
    assert_eq!(w.len(), 2);
    assert!(
        w[0].ends_with("cmd.ks:1: module --name=nodejs ignored: debian has no DNF modules"),
        "{w:?}"
    );
}

#[test]
fn part_root_size_is_explained_other_parts_ignored() {
    let ks = parse_str(
        "part / --size 5120\npart /home --size=100\npart swap --recommended\n",
        Path::new("/k/cmd.ks"),
    )
    .unwrap();
    assert_eq!(ks.warnings.len(), 3, "{:?}", ks.warnings);
    assert!(ks.warnings[0].starts_with("/k/cmd.ks:1: part / --size=5120 not used: livecd-creator makes the root an ext4 image of that size inside its squashfs; this build's live root is a squashfs or EROFS of the tree, sized to its content"));
    assert_eq!(
        ks.warnings[1],
        "/k/cmd.ks:2: part ignored: it means nothing for a live image"
    );
}

#[test]
fn unclosed_sections_name_their_opening_line() {
    let e = parse_err("lang C\n%packages\nkernel\n\n");
    assert!(
        e.contains("/k/cmd.ks:2: %packages is not closed with %end"),
        "{e}"
    );
    let e = parse_err("%post\n%end\n\n%post --nochroot\necho\n");
    assert!(
        e.contains("/k/cmd.ks:4: %post is not closed with %end"),
        "{e}"
    );
    let e = parse_err("\n%pre\necho\n");
    assert!(
        e.contains("/k/cmd.ks:2: %pre is not closed with %end"),
        "{e}"
    );
}

#[test]
fn repo_options_not_acted_on_are_warned_about() {
    let ks = parse_str(
        "repo --name=x:y --baseurl=http://example.org/debian --ignoregroups=true --install\n",
        Path::new("/k/cmd.ks"),
    )
    .unwrap();
    assert_eq!(
        ks.warnings,
        [
            "/k/cmd.ks:1: repo --install is ignored",
            "/k/cmd.ks:1: repo --ignoregroups is ignored"
        ]
    );
    // apt ignores sources.list.d names with ':'.
    let t = tempfile::tempdir().unwrap();
    let el = t.path().join("el");
    translate::generate(&ks, Distro::Debian, "bookworm", &PackageMap::default(), &el).unwrap();
    assert!(el
        .join("kickstart-files/apt/undercloud-live-kickstart-x_y.list")
        .is_file());
}

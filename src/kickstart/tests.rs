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

    // One warning per command with no meaning for a live image.
    for cmd in [
        "auth",
        "firewall",
        "xconfig",
        "zerombr",
        "clearpart",
        "part",
        "shutdown",
    ] {
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
    let apt = read("kickstart-files/apt/updates.list");
    assert!(
        apt.contains("deb mirror+https://mirrors.fedoraproject.org/mirrorlist?repo=updates-released-f$releasever&arch=$basearch bookworm main"),
        "{apt}"
    );
    assert!(read("kickstart-files/dpkg-excludedocs").contains("path-exclude=/usr/share/doc/*"));
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
    assert!(read("post-root.d/90-kickstart-post-02").contains("INSTALL_ROOT=\"$TARGET_ROOT\""));
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
    let repo = fs::read_to_string(el.join("kickstart-files/yum/updates.repo")).unwrap();
    assert!(
        repo.contains("[updates]\nname=updates\nmirrorlist=https://") && repo.contains("cost=50")
    );
    let dnf = fs::read_to_string(el.join("kickstart-files/dnf.conf")).unwrap();
    assert_eq!(
        dnf,
        "[main]\ntsflags=nodocs\nexcludepkgs=anaconda,kernel-modules-extra\n"
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

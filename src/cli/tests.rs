//! The command line as a whole: clap's own consistency checks, help that
//! fits an 80-column terminal, and every option as it was (scripts and
//! units name them; renaming one breaks them).

use clap::CommandFactory;

use super::Cli;

#[test]
fn clap_accepts_the_definition() {
    Cli::command().debug_assert();
}

/// Every command and subcommand, built (globals propagated), with its
/// path ("" for the top level, "elements apply").
fn commands() -> Vec<(String, clap::Command)> {
    fn walk(path: String, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            // clap's own `help` subcommand.
            if sub.get_name() == "help" {
                continue;
            }
            let p = format!("{path} {}", sub.get_name());
            walk(p.trim_start().to_owned(), sub, out);
        }
    }
    let mut cli = Cli::command();
    cli.build();
    let mut out = Vec::new();
    walk(String::new(), &cli, &mut out);
    out
}

#[test]
fn help_fits_80_columns() {
    for (path, mut cmd) in commands() {
        let help = cmd.render_long_help().to_string();
        for line in help.lines() {
            let width = line.chars().count();
            assert!(width <= 80, "`{path} --help`: {width} columns: {line}");
        }
    }
}

/// One line per argument, as `--help` shows it: short and long names,
/// value name, default, possible values (sorted: the spellings matter,
/// not their order).
fn describe(path: &str, arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let mut s = if arg.is_positional() {
        let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        let (open, close) = if arg.is_required_set() {
            ("<", ">")
        } else {
            ("[", "]")
        };
        format!("{open}{value}{close}{}", if many { "..." } else { "" })
    } else {
        let mut s = String::new();
        if let Some(c) = arg.get_short() {
            s.push_str(&format!("-{c}/"));
        }
        s.push_str(&format!("--{}", arg.get_long().unwrap_or_default()));
        if arg.get_action().takes_values() {
            s.push_str(&format!(" <{value}>"));
        }
        s
    };
    let defaults: Vec<_> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy())
        .collect();
    // A flag's default ("false") is clap's, not ours, and help hides it.
    if !defaults.is_empty() && arg.get_action().takes_values() {
        s.push_str(&format!(" [default: {}]", defaults.join(", ")));
    }
    if arg.get_action().takes_values() {
        let mut values: Vec<_> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .collect();
        values.sort();
        if !values.is_empty() {
            s.push_str(&format!(" [possible values: {}]", values.join(", ")));
        }
    }
    format!("{path} {s}").trim_start().to_owned()
}

#[test]
fn options_are_unchanged() {
    let mut found: Vec<String> = commands()
        .iter()
        .flat_map(|(path, cmd)| {
            cmd.get_arguments()
                .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
                .map(|a| describe(path, a))
                .collect::<Vec<_>>()
        })
        .collect();
    found.sort();
    let mut expected: Vec<&str> = EXPECTED.lines().filter(|l| !l.is_empty()).collect();
    expected.sort();
    assert_eq!(found.join("\n"), expected.join("\n"));
}

/// Every argument of every command, taken from the `--help` of the binary
/// before src/cli existed.
const EXPECTED: &str = r#"
-q/--quiet
assemble --esp-dir <ESP_DIR>
assemble --label <LABEL>
assemble --no-media-checksum
assemble --root <ROOT>
assemble --tree <TREE>
assemble -o/--output <OUTPUT>
assemble -q/--quiet
boot --accel <ACCEL> [default: auto] [possible values: auto, kvm, tcg]
boot --append <ARGS>
boot --as <MEDIA> [possible values: cdrom, disk, usb]
boot --cpus <CPUS> [default: 2]
boot --disk <DISKS>
boot --expect <EXPECT>
boot --firmware <FIRMWARE> [possible values: bios, uefi, uefi-secure]
boot --forward <HOSTPORT:GUESTPORT>
boot --initrd <FILE>
boot --kernel <FILE>
boot --link <LOCALPORT:PEERPORT>
boot --log <LOG>
boot --memory <MEMORY> [default: 2048]
boot --timeout <TIMEOUT> [default: 600]
boot --writable
boot -q/--quiet
boot [IMAGE]
build --base <BASE>
build --base-checksum-url <BASE_CHECKSUM_URL>
build --base-sha256 <BASE_SHA256>
build --cache-dir <CACHE_DIR>
build --compression <COMPRESSION>
build --elements-path <ELEMENTS_PATH>
build --format <FORMAT>
build --insecure-skip-signature
build --keep-workdir
build --kickstart <KICKSTART>
build --kickstart-package-map <KICKSTART_PACKAGE_MAP>
build --log <LOG>
build --no-cache
build --offline
build --persistent-size <PERSISTENT_SIZE>
build --workdir <WORKDIR>
build -o/--output <OUTPUT>
build -q/--quiet
build -x/--exclude-element <EXCLUDE_ELEMENTS>
build <SPEC>
cache -q/--quiet
cache list --cache-dir <CACHE_DIR>
cache list -q/--quiet
cache prune --all
cache prune --cache-dir <CACHE_DIR>
cache prune --dry-run
cache prune --older-than <OLDER_THAN> [default: 30d]
cache prune -q/--quiet
devices --all
devices --json
devices -q/--quiet
elements -q/--quiet
elements apply --cache-dir <CACHE_DIR>
elements apply --distro <DISTRO> [possible values: debian, fedora]
elements apply --dry-run
elements apply --elements-path <ELEMENTS_PATH>
elements apply --exclude-hook <EXCLUDE_HOOKS>
elements apply --image-name <IMAGE_NAME>
elements apply --kickstart <KICKSTART>
elements apply --kickstart-package-map <KICKSTART_PACKAGE_MAP>
elements apply --log <LOG>
elements apply --offline
elements apply --phases <PHASES>
elements apply --release <RELEASE>
elements apply --target <TARGET>
elements apply -e/--element <ELEMENTS>
elements apply -q/--quiet
elements apply -x/--exclude-element <EXCLUDE_ELEMENTS>
elements apply [ELEMENT]...
elements deps --cache-dir <CACHE_DIR>
elements deps --distro <DISTRO> [possible values: debian, fedora]
elements deps --elements-path <ELEMENTS_PATH>
elements deps --image-name <IMAGE_NAME>
elements deps --json
elements deps --kickstart <KICKSTART>
elements deps --kickstart-package-map <KICKSTART_PACKAGE_MAP>
elements deps --offline
elements deps --release <RELEASE>
elements deps -e/--element <ELEMENTS>
elements deps -q/--quiet
elements deps -x/--exclude-element <EXCLUDE_ELEMENTS>
elements deps [ELEMENT]...
elements plan --cache-dir <CACHE_DIR>
elements plan --distro <DISTRO> [possible values: debian, fedora]
elements plan --elements-path <ELEMENTS_PATH>
elements plan --image-name <IMAGE_NAME>
elements plan --json
elements plan --kickstart <KICKSTART>
elements plan --kickstart-package-map <KICKSTART_PACKAGE_MAP>
elements plan --offline
elements plan --phases <PHASES>
elements plan --release <RELEASE>
elements plan -e/--element <ELEMENTS>
elements plan -q/--quiet
elements plan -x/--exclude-element <EXCLUDE_ELEMENTS>
elements plan [ELEMENT]...
elements show --cache-dir <CACHE_DIR>
elements show --distro <DISTRO> [possible values: debian, fedora]
elements show --elements-path <ELEMENTS_PATH>
elements show --image-name <IMAGE_NAME>
elements show --json
elements show --kickstart <KICKSTART>
elements show --kickstart-package-map <KICKSTART_PACKAGE_MAP>
elements show --offline
elements show --release <RELEASE>
elements show -e/--element <ELEMENTS>
elements show -q/--quiet
elements show -x/--exclude-element <EXCLUDE_ELEMENTS>
elements show <NAME>
elements show [ELEMENT]...
fetch --cache-dir <CACHE_DIR>
fetch --checksum-url <CHECKSUM_URL>
fetch --insecure-skip-signature
fetch --offline
fetch --sha256 <SHA256>
fetch --unpack <UNPACK>
fetch -q/--quiet
fetch <WHAT>
inspect --json
inspect -q/--quiet
inspect <IMAGE>
install --config <CONFIG>
install --keep-live-changes
install --live-medium <LIVE_MEDIUM>
install --log <LOG> [default: /var/log/undercloud-live-install.log]
install --source <SOURCE>
install --target <TARGET>
install --unattended
install -q/--quiet
install -y/--yes
medium -q/--quiet
medium cat --device <DEVICE>
medium cat -q/--quiet
medium cat <PATH>
medium show --device <DEVICE>
medium show --json
medium show -q/--quiet
ramdisk -q/--quiet
ramdisk pack --compression <COMPRESSION> [default: zstd]
ramdisk pack --level <LEVEL>
ramdisk pack --root <ROOT>
ramdisk pack -o/--output <OUTPUT>
ramdisk pack -q/--quiet
status --json
status --wait <SECONDS>
status -q/--quiet
undercloud -q/--quiet
undercloud configure --config <CONFIG>
undercloud configure --dry-run
undercloud configure --root <ROOT> [default: /]
undercloud configure -q/--quiet
undercloud enroll --api <API>
undercloud enroll --check
undercloud enroll --nodes <NODES>
undercloud enroll --wait <WAIT> [default: 600]
undercloud enroll -q/--quiet
verify -q/--quiet
verify <IMAGE>
write --allow-fixed
write --json
write --no-verify
write --to-file
write -q/--quiet
write -y/--yes
write <DEVICES>...
write <IMAGE>
"#;

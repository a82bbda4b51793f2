//! A translated kickstart as the element runner plans it: %post sections in
//! file order, in and out of the root interleaved. (Here rather than in the
//! kickstart module's unit tests: the elements module uses the kickstart
//! module, not the other way round.)

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

use undercloud_live::elements::{self, plan};
use undercloud_live::kickstart::parse_str;
use undercloud_live::kickstart::translate::{self, PackageMap};
use undercloud_live::spec::Distro;

/// %post sections run in file order, in and out of the root interleaved,
/// as livecd-creator runs them: one phase, `--nochroot` ones as outside
/// steps, and `elements plan` says where each runs.
#[test]
fn posts_interleave_in_file_order() {
    let t = tempfile::tempdir().unwrap();
    let text = "%post\necho 1\n%end\n%post --nochroot\necho 2\n%end\n%post\necho 3\n%end\n%post --nochroot --erroronfail\necho 4\n%end\n";
    let ks = parse_str(text, &t.path().join("order.ks")).unwrap();
    let dir = t.path().join("kickstart");
    translate::generate(
        &ks,
        Distro::Debian,
        "bookworm",
        &PackageMap::default(),
        &dir,
    )
    .unwrap();
    let el =
        elements::Element::load(translate::ELEMENT, &dir, vec!["kickstart".to_string()]).unwrap();
    let set = elements::ElementSet {
        elements: vec![el],
        builtins: vec![],
        provided: Default::default(),
        warnings: vec![],
        path: vec![],
    };
    let cx = plan::Context::new(Distro::Debian, "bookworm", "t", t.path());
    let p = plan::make(&set, &cx).unwrap();
    let post = p.phase(elements::hooks::Phase::PostInstall).unwrap();
    let got: Vec<(&str, bool)> = post
        .steps
        .iter()
        .map(|s| (s.name(), matches!(s, plan::Step::OutsideHook { .. })))
        .collect();
    assert_eq!(
        got,
        [
            ("90-kickstart-post-01", false),
            ("90-kickstart-post-02", true),
            ("90-kickstart-post-03", false),
            ("90-kickstart-post-04", true),
        ]
    );
    assert!(p
        .phase(elements::hooks::Phase::PostRoot)
        .is_none_or(|pp| pp.steps.is_empty()));
    let text = elements::apply::plan_text(&p, None);
    assert!(
        text.contains("post-install.d/outside/90-kickstart-post-02 (on the build host)"),
        "{text}"
    );
    assert!(
        text.contains("post-install.d (inside; 2 on the build host):"),
        "{text}"
    );
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains("\"kind\":\"outside-hook\""), "{json}");
}

/// More than 99 %post sections still sort in file order.
#[test]
fn many_posts_keep_file_order() {
    let text: String = (0..120)
        .map(|i| format!("%post\necho {i}\n%end\n"))
        .collect();
    let t = tempfile::tempdir().unwrap();
    let ks = parse_str(&text, &t.path().join("many.ks")).unwrap();
    let el = t.path().join("el");
    translate::generate(&ks, Distro::Debian, "bookworm", &PackageMap::default(), &el).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(el.join("post-install.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("90-"))
        .collect();
    names.sort_by(|a, b| elements::hooks::sort_n(a, b));
    assert_eq!(names[0], "90-kickstart-post-001");
    assert_eq!(names[99], "90-kickstart-post-100");
    assert_eq!(names[119], "90-kickstart-post-120");
}

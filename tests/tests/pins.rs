//! Loading against pins left by another hookwall. A pinned map whose layout is not this
//! program's must stop `Filter::open` with the "`hookwall detach` first" error, and change
//! nothing, rather than run the new program on maps it would misread. A compatible older
//! program is replaced in place, and from that instant the new one judges as the old one did,
//! even when it reads maps the old one did not have.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    maps::{Array, Map, MapData},
    programs::{
        TestRun as _, TestRunOptions,
        links::{FdLink, PinnedLink},
    },
};
use filter_common::{Meta, Policy, fast as fast_layout, map_names};
use hookwall::{
    config::AttachMode,
    filter::{
        Desired, Filter, FilterError, Origin, Pins, detach, ensure_bpffs, read_pinned_fast_map,
    },
};
use hookwall_tests::{
    XDP_DROP, XDP_PASS,
    frames::{L4, Packet},
    netns::{NetNs, VethPair},
    settings, unique_name,
};

/// Removes every pin under the path when dropped, also when the test fails.
struct Cleanup(Pins);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = detach(&self.0) {
            eprintln!("cleaning up {}: {e}", self.0.root().display());
        }
    }
}

#[test]
fn a_pinned_map_of_another_layout_is_refused_with_the_detach_hint_and_nothing_changes() {
    let pins = Pins::new(format!("/sys/fs/bpf/{}", unique_name("hw-pins-")));
    let _cleanup = Cleanup(pins.clone());
    // A first open creates and pins everything, as a previous run would have.
    drop(Filter::open(pins.clone()).expect("first open"));
    assert!(pins.has_program(), "the first open pins the program");

    // An older hookwall's settings map in place of this one's.
    let settings = pins.map(map_names::SETTINGS);
    std::fs::remove_file(&settings).expect("unpinning the settings map");
    pin_old_layout_settings(&pins);
    let pinned_id = || {
        let map = MapData::from_pin(&settings).expect("a map pinned as the settings map");
        map.info().expect("pinned map info").id()
    };
    let old_id = pinned_id();

    let err = open_refused_as_incompatible(&pins);
    let message = err.to_string();
    assert!(
        message.contains("hookwall detach") && message.contains(map_names::SETTINGS),
        "the message must name the map and the fix: {message}"
    );

    // Nothing changed: the old map is still the one pinned, the program still pinned.
    assert_eq!(pinned_id(), old_id, "the old map is still the one pinned");
    assert!(pins.has_program(), "the pinned program is left in place");
}

/// Pins an older hookwall's settings map (one u32 per entry instead of one `Policy`) where
/// this version's belongs; the pin must be free.
fn pin_old_layout_settings(pins: &Pins) {
    let old: Array<MapData, u32> = Array::create(1, 0).expect("creating the old-layout map");
    old.pin(pins.map(map_names::SETTINGS))
        .expect("pinning the old-layout map");
}

/// Opens `pins`, which must be refused with the incompatible-pins error; returns the error.
fn open_refused_as_incompatible(pins: &Pins) -> FilterError {
    let err = match Filter::open(pins.clone()) {
        Ok(_) => panic!("open must refuse a settings map of another layout"),
        Err(e) => e,
    };
    assert!(
        matches!(err, FilterError::Incompatible { .. }),
        "not the incompatible-pins error: {err:?}"
    );
    err
}

/// What is pinned under `pins`: the entries of the pin directory and of its two
/// subdirectories, sorted.
fn pinned(pins: &Pins) -> Vec<String> {
    let mut names = Vec::new();
    for dir in pins.dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("listing a pin directory").path();
            names.push(path.display().to_string());
        }
    }
    names.sort();
    names
}

#[test]
fn a_first_open_that_fails_leaves_the_pin_path_as_it_found_it() {
    let pins = Pins::new(format!("/sys/fs/bpf/{}", unique_name("hw-pins-")));
    let _cleanup = Cleanup(pins.clone());
    // No program pinned, one map of another layout: the loader creates and pins the maps it
    // meets before that one, then fails on it. bpffs first, as `open` would mount it: no test
    // may have mounted it yet.
    ensure_bpffs(pins.root()).expect("mounting bpffs");
    std::fs::create_dir_all(pins.maps_dir()).expect("creating the maps directory");
    pin_old_layout_settings(&pins);
    let before = pinned(&pins);
    // The loader meets the maps in hash order: several attempts, so that the planted map is
    // not the first one met every time.
    for attempt in 0..4 {
        open_refused_as_incompatible(&pins);
        assert_eq!(pinned(&pins), before, "attempt {attempt} left pins behind");
    }
}

#[test]
fn a_program_of_another_version_is_replaced_without_a_gap_even_with_new_maps() {
    let pins = Pins::new(format!("/sys/fs/bpf/{}", unique_name("hw-pins-")));
    let _cleanup = Cleanup(pins.clone());
    let (ns_a, ns_b) = (NetNs::new("hw-pins-a"), NetNs::new("hw-pins-b"));
    let veth = VethPair::new(&ns_a, &[], &ns_b, &[]);
    let desired = allowlist();
    let mut first = Filter::open(pins.clone()).expect("first open");
    first.apply(&desired).expect("first apply");
    ns_a.run(|| first.attach(std::slice::from_ref(&veth.a), AttachMode::Native))
        .expect("attaching to the veth");
    drop(first);

    // Make the pins look like an older hookwall's: another object hash in META, and without
    // the fast map and the narrow bitmap, which that version did not have.
    let mut meta: Array<MapData, Meta> = Array::try_from(Map::Array(
        MapData::from_pin(pins.map(map_names::META)).expect("META"),
    ))
    .expect("META as an array");
    let mut old = meta.get(&0, 0).expect("reading META");
    old.object_sha256 = [0; 32];
    meta.set(0, &old, 0).expect("writing META");
    for name in [map_names::FAST, map_names::V6_NARROW] {
        std::fs::remove_file(pins.map(name)).expect("unpinning a map the old version lacked");
    }
    // And with maps that version had and this one does not (a bitmap now in the fast map, the
    // narrow hash now a bitmap): their pins go with the program.
    let retired = ["HW_V4_SUMMARY", "HW_V6_NARROW"].map(|name| pins.map(name));
    for path in &retired {
        Array::<MapData, u64>::create(1, 0)
            .expect("creating a stand-in for a retired map")
            .pin(path)
            .expect("pinning it");
    }

    // Open alone (no apply yet) replaces the program on the link: from that moment the new
    // program is in force and must already let the allowed sources through.
    let mut filter = Filter::open(pins.clone()).expect("open over the older pins");
    assert_eq!(filter.origin(), Origin::Replaced);
    let prog = filter.program().expect("the new program");
    let prog_id = prog.info().expect("program info").id();
    let (_, _, link_path) = pins
        .links()
        .expect("listing links")
        .into_iter()
        .next()
        .expect("the link pinned by the first run");
    let link = FdLink::from(PinnedLink::from_pin(&link_path).expect("the pinned link"));
    assert_eq!(
        link.info().expect("link info").program_id(),
        prog_id,
        "the link runs the new program"
    );
    judge_allowlist(&filter, "right after the replacement");
    assert_fast_map_is_the_programs(&pins, prog_id);
    for path in &retired {
        assert!(
            !path.exists(),
            "the retired map's pin {} is removed",
            path.display()
        );
    }
    filter.apply(&desired).expect("apply after the replacement");
    judge_allowlist(&filter, "after the next apply");
    drop(filter);
    drop(veth);
}

#[test]
fn a_pinned_program_whose_fast_map_pin_is_gone_is_replaced_not_adopted() {
    let pins = Pins::new(format!("/sys/fs/bpf/{}", unique_name("hw-pins-")));
    let _cleanup = Cleanup(pins.clone());
    let desired = allowlist();
    let mut first = Filter::open(pins.clone()).expect("first open");
    first.apply(&desired).expect("first apply");
    let first_id = first.program().expect("program").info().expect("info").id();
    assert_fast_map_is_the_programs(&pins, first_id);
    drop(first);

    // Same version, so it would be adopted; but without its fast map pinned, nothing could
    // feed the program: it must be replaced by one whose fast map is filled and pinned.
    std::fs::remove_file(pins.map(map_names::FAST)).expect("unpinning the fast map");
    let filter = Filter::open(pins.clone()).expect("open without the fast map's pin");
    assert_eq!(filter.origin(), Origin::Replaced);
    let prog_id = filter
        .program()
        .expect("program")
        .info()
        .expect("info")
        .id();
    assert_ne!(prog_id, first_id, "a new program was loaded");
    assert_fast_map_is_the_programs(&pins, prog_id);
    judge_allowlist(&filter, "right after the replacement, before any apply");
    drop(filter);

    // And the next run adopts that one.
    let again = Filter::open(pins.clone()).expect("open again");
    assert_eq!(again.origin(), Origin::Adopted);
    judge_allowlist(&again, "after re-adoption");
}

#[test]
fn after_re_adoption_the_first_apply_rewrites_the_fast_map_even_with_nothing_changed() {
    let pins = Pins::new(format!("/sys/fs/bpf/{}", unique_name("hw-pins-")));
    let _cleanup = Cleanup(pins.clone());
    let desired = allowlist();
    let mut first = Filter::open(pins.clone()).expect("first open");
    first.apply(&desired).expect("first apply");
    let report = first.apply(&desired).expect("the same apply again");
    assert_eq!(report.words_written, 0, "an unchanged apply writes nothing");
    // Leave the pinned fast map in a state the tries do not derive to (every bitmap bit and
    // the narrow-skip flag set), as an interrupted daemon could leave it in another way.
    first
        .force_trie_lookups_for_bench()
        .expect("the bench hook");
    let bitmaps = fast_layout::V4_COARSE..fast_layout::WORDS;
    assert!(
        read_fast(&pins)[bitmaps.clone()]
            .iter()
            .all(|&w| w == u64::MAX)
    );
    drop(first);
    // The hook also set its flag in the settings map, which alone would force a rewrite; take
    // it out there, so that only the fast map differs from what the pins record.
    let settings_pin = MapData::from_pin(pins.map(map_names::SETTINGS)).expect("settings map");
    let mut settings_map: Array<MapData, Policy> =
        Array::try_from(Map::Array(settings_pin)).expect("settings as an array");
    let mut recorded = settings_map.get(&0, 0).expect("reading the settings");
    recorded.settings = recorded.settings.without_skip_narrow();
    settings_map
        .set(0, &recorded, 0)
        .expect("writing the settings");

    let mut again = Filter::open(pins.clone()).expect("open again");
    assert_eq!(again.origin(), Origin::Adopted);
    let report = again
        .apply(&desired)
        .expect("the same apply after re-adoption");
    assert!(
        report.words_written > 0,
        "the adopted fast map is not trusted"
    );
    let words = read_fast(&pins);
    assert_eq!(
        words[fast_layout::POLICY],
        desired.settings.word(),
        "the settings are the config's, without the bench flag"
    );
    let set: u32 = words[bitmaps].iter().map(|w| w.count_ones()).sum();
    assert!(
        (1..100).contains(&set),
        "the bitmaps hold the allowlist's few bits again, not {set}"
    );
    judge_allowlist(&again, "after the rewrite");
}

/// The pinned fast map's whole value.
fn read_fast(pins: &Pins) -> Vec<u64> {
    read_pinned_fast_map(&pins.map(map_names::FAST)).expect("reading the pinned fast map")
}

/// Asserts that the pinned fast map is one the program `prog_id` reads.
fn assert_fast_map_is_the_programs(pins: &Pins, prog_id: u32) {
    let fast = MapData::from_pin(pins.map(map_names::FAST)).expect("the fast map is pinned");
    let fast_id = fast.info().expect("fast map info").id();
    let prog = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .expect("the program is loaded");
    let maps = prog.map_ids().expect("map ids").expect("map ids supported");
    assert!(
        maps.contains(&fast_id),
        "program {prog_id} reads maps {maps:?}, not the pinned fast map {fast_id}"
    );
}

/// The allowlist [`judge_allowlist`] judges against, enforced on port 443.
fn allowlist() -> Desired {
    Desired {
        v4: vec!["203.0.113.0/24".parse().expect("literal")],
        // A /48 and a /29 behind partial /24 blocks: allowed only through the narrow bitmap, the
        // /29 through the last of the eight /32 keys it expands to.
        v6: vec![
            "2001:db8:1::/48".parse().expect("literal"),
            "2001:dc0::/29".parse().expect("literal"),
        ],
        ports: vec![443],
        settings: settings(true, false),
    }
}

/// Runs the filter's program on frames to the protected port from an allowed and a refused
/// source of each family and asserts each verdict.
fn judge_allowlist(filter: &Filter, when: &str) {
    let prog = filter.program().expect("the program");
    let frames = [
        (
            Packet::v4(Ipv4Addr::new(203, 0, 113, 7), L4::tcp(443)),
            XDP_PASS,
            "allowed IPv4",
        ),
        (
            Packet::v4(Ipv4Addr::new(198, 51, 100, 7), L4::tcp(443)),
            XDP_DROP,
            "refused IPv4",
        ),
        (
            Packet::v6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7), L4::tcp(443)),
            XDP_PASS,
            "allowed IPv6",
        ),
        (
            Packet::v6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 7), L4::tcp(443)),
            XDP_DROP,
            "refused IPv6",
        ),
        (
            Packet::v6(
                Ipv6Addr::new(0x2001, 0xdc7, 0xffff, 0, 0, 0, 0, 7),
                L4::tcp(443),
            ),
            XDP_PASS,
            "allowed IPv6 in the last /32 of a /29",
        ),
        (
            Packet::v6(Ipv6Addr::new(0x2001, 0xdc8, 0, 0, 0, 0, 0, 7), L4::tcp(443)),
            XDP_DROP,
            "refused IPv6 just past the /29",
        ),
    ];
    for (packet, want, what) in frames {
        let frame = packet.to_bytes();
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        let got = prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value;
        assert_eq!(got, want, "{what}, {when}");
    }
}

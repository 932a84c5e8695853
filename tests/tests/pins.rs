//! Loading against pins left by another hookwall: a pinned map whose layout is not this
//! program's must stop `Filter::open` with the "`hookwall detach` first" error, and change
//! nothing, rather than run the new program on maps it would misread.

use aya::maps::{Array, MapData};
use filter_common::map_names;
use hookwall::filter::{Filter, FilterError, Pins, detach};
use hookwall_tests::unique_name;

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

    // An older hookwall's settings map: one u32 per entry instead of one `Config`.
    let settings = pins.map(map_names::SETTINGS);
    std::fs::remove_file(&settings).expect("unpinning the settings map");
    let old: Array<MapData, u32> = Array::create(1, 0).expect("creating the old-layout map");
    old.pin(&settings).expect("pinning the old-layout map");
    let pinned_id = || {
        let map = MapData::from_pin(&settings).expect("a map pinned as the settings map");
        map.info().expect("pinned map info").id()
    };
    let old_id = pinned_id();

    let err = match Filter::open(pins.clone()) {
        Ok(_) => panic!("open must refuse a settings map of another layout"),
        Err(e) => e,
    };
    assert!(
        matches!(err, FilterError::Incompatible { .. }),
        "not the incompatible-pins error: {err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("hookwall detach") && message.contains(map_names::SETTINGS),
        "the message must name the map and the fix: {message}"
    );

    // Nothing changed: the old map is still the one pinned, the program still pinned.
    assert_eq!(pinned_id(), old_id, "the old map is still the one pinned");
    assert!(pins.has_program(), "the pinned program is left in place");
}

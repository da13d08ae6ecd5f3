//! Label selectors: parsing never panics, and whatever parses prints back to a
//! string that parses to the same selector.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_api::selector::LabelSelector;

fuzz_target!(|input: &str| {
    let Ok(selector) = LabelSelector::parse(input) else {
        return;
    };
    let printed = selector.to_string();
    let reparsed = LabelSelector::parse(&printed).expect("a printed selector parses");
    assert_eq!(reparsed, selector, "{input:?} printed as {printed:?}");
    // Matching its own exact-match labels never panics either.
    let labels: std::collections::BTreeMap<String, String> = selector
        .requirements()
        .iter()
        .filter_map(|r| Some((r.key().to_string(), r.values().first()?.clone())))
        .collect();
    let _ = selector.matches(&labels);
});

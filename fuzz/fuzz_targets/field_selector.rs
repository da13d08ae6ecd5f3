//! Field selectors: parsing never panics, and whatever parses prints back
//! (values re-escaped) to a string that parses to the same selector.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_api::selector::FieldSelector;

fuzz_target!(|input: &str| {
    let Ok(selector) = FieldSelector::parse(input) else {
        return;
    };
    let printed = selector.to_string();
    let reparsed = FieldSelector::parse(&printed).expect("a printed selector parses");
    assert_eq!(reparsed, selector, "{input:?} printed as {printed:?}");
    let _ = selector.matches(|field: &str| Some(field.len().to_string()));
});

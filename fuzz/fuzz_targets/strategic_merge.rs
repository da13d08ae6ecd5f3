//! Strategic merge patch: any pair of JSON documents either merges or fails
//! with an error, never a panic, and an empty patch changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use skiff_api::patch::{apply_merge_patch, apply_strategic_merge};

const KINDS: [(&str, &str); 4] = [
    ("", "Pod"),
    ("apps", "Deployment"),
    ("", "Service"),
    ("", "Node"),
];

fuzz_target!(|input: &[u8]| {
    // Two documents separated by a NUL byte: the live object and the patch.
    let mut parts = input.splitn(2, |b| *b == 0);
    let (Some(live), Some(patch)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(live), Ok(patch)) = (
        serde_json::from_slice::<Value>(live),
        serde_json::from_slice::<Value>(patch),
    ) else {
        return;
    };
    for (group, kind) in KINDS {
        let _ = apply_strategic_merge(group, kind, &live, &patch);
        // The same documents one level down, where merge keys apply.
        let nested_live = json!({"spec": {"template": {"spec": live.clone()}}});
        let nested_patch = json!({"spec": {"template": {"spec": patch.clone()}}});
        let _ = apply_strategic_merge(group, kind, &nested_live, &nested_patch);
        if live.is_object() {
            let same = apply_strategic_merge(group, kind, &live, &json!({}));
            assert_eq!(
                same.ok().as_ref(),
                Some(&live),
                "an empty patch is identity"
            );
        }
    }
    let _ = apply_merge_patch(&live, &patch);
});

//! Any body must decode or fail cleanly, and whatever decodes must encode and
//! decode again to the same object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut body = skiff_proto::MAGIC.to_vec();
    body.extend_from_slice(data);
    if let Ok(decoded) = skiff_proto::decode_envelope(&body) {
        let encoded = skiff_proto::encode_envelope(&decoded.object)
            .expect("a decoded object encodes");
        let again = skiff_proto::decode_envelope(&encoded).expect("an encoded object decodes");
        assert_eq!(again.object, decoded.object);
    }
});

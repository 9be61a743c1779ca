//! The `.npy` reader of `jagc` (`jagged::cli::npy::decode`, npyz behind our
//! checks of the preamble and the shape; `to_dense`). Any bytes must give an
//! array or an `NpyError`, never a panic (npyz multiplies the dimensions
//! unchecked, so an unguarded shape is a finding); an array that decodes
//! must hold `len * dtype.size()` bytes and survive an encode and a decode
//! unchanged.
#![no_main]

use std::path::Path;

use jagged::cli::npy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.npy");
    let Ok(array) = npy::decode(data, path) else {
        return;
    };
    assert_eq!(array.data.len(), array.len() * array.dtype.size(), "data size");
    let bytes = npy::encode(&array, path).expect("encode a decoded array");
    let again = npy::decode(&bytes, path).expect("decode an encoded array");
    assert_eq!(again, array, "encode/decode round trip changed the array");
    let elements = array.len();
    if let Ok(tensor) = npy::to_dense(array, path) {
        assert_eq!(tensor.data().len(), elements);
    }
});

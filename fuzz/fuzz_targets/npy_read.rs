//! The `.npy` reader (`jagged_ir::npy::read`, `DenseTensor::load_npy`). The
//! reader only takes a path, so every input goes through a per-process file
//! in `$JAGGED_FUZZ_TMP` (the scripts point it into their working folder),
//! else `/dev/shm` when there is one, else the system's temporary directory. Any bytes must
//! give an array or an `NpyError`/`TensorError`; an array that reads must
//! hold `len * dtype.size()` bytes and survive a write and a read unchanged.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use jagged_ir::DenseTensor;
use jagged_ir::npy;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = match std::env::var_os("JAGGED_FUZZ_TMP") {
            Some(dir) => PathBuf::from(dir),
            None if shm.is_dir() => shm,
            None => std::env::temp_dir(),
        };
        let id = std::process::id();
        (
            dir.join(format!("jagged-fuzz-npy-{id}-in.npy")),
            dir.join(format!("jagged-fuzz-npy-{id}-out.npy")),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (input, output) = scratch();
    std::fs::write(input, data).expect("write the scratch file");
    if let Ok(array) = npy::read(input) {
        assert_eq!(array.data.len(), array.len() * array.dtype.size(), "data size");
        npy::write(output, &array).expect("write back a valid array");
        let again = npy::read(output).expect("read back a written array");
        assert_eq!(again, array, "write/read round trip changed the array");
    }
    if let Ok(tensor) = DenseTensor::load_npy(input) {
        assert_eq!(tensor.data().len(), tensor.shape().iter().product::<usize>());
    }
});

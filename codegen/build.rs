//! Hashes the code generator's sources into `JAGGED_CODEGEN_SOURCE_HASH`, so
//! that the runtime's on-disk kernel cache, whose key includes it, never
//! serves PTX that an older code generator wrote (see
//! `CODEGEN_SOURCE_HASH` in `src/lib.rs`).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src");
    let mut files = Vec::new();
    collect(Path::new("src"), &mut files);
    files.sort();
    // FNV-1a over each file's path and bytes: a change detector, not a
    // cryptographic hash.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for file in &files {
        eat(file.to_string_lossy().as_bytes());
        eat(&[0]);
        match std::fs::read(file) {
            Ok(bytes) => eat(&bytes),
            Err(e) => panic!("build.rs: cannot read {}: {e}", file.display()),
        }
        eat(&[0]);
    }
    println!("cargo:rustc-env=JAGGED_CODEGEN_SOURCE_HASH={hash:016x}");
}

/// Every file under `dir`, recursively.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => panic!("build.rs: cannot list {}: {e}", dir.display()),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

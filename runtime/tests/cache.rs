//! The kernel cache: hits in memory and on disk, corrupt files, and many
//! threads and processes filling one entry at once.

use jagged_codegen::{Arch, CODEGEN_VERSION, Spec};
use jagged_ir::DType;
use jagged_ir::ops::{self, JaggedSpec};
use jagged_runtime::cache::DEFAULT_MAX_DISK_BYTES;
use jagged_runtime::{
    BackendKind, CacheError, CacheKey, CacheStats, KernelCache, Runtime, codegen_key,
    graph_cache_key,
};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("jagged-cache-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key(spec: &str) -> CacheKey {
    CacheKey::from_graph_text(
        "graph g(x: jagged<f32,[4]>) { y = softmax(x) }",
        spec,
        "codegen-1",
    )
}

/// A payload that is a function of its seed, big enough that a torn write
/// would be visible.
fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn stats(memory_hits: u64, disk_hits: u64, misses: u64, corrupt: u64) -> CacheStats {
    CacheStats {
        memory_hits,
        disk_hits,
        misses,
        corrupt,
        ..CacheStats::default()
    }
}

/// Gets `key` and counts the compute calls.
fn get(cache: &KernelCache, key: &CacheKey, value: &[u8], calls: &Cell<u32>) -> Vec<u8> {
    cache
        .get_or_insert_with(key, || {
            calls.set(calls.get() + 1);
            Ok::<_, std::convert::Infallible>(value.to_vec())
        })
        .expect("infallible")
        .to_vec()
}

#[test]
fn second_get_in_memory_does_not_compute() {
    let cache = KernelCache::memory_only();
    let calls = Cell::new(0);
    let value = payload(1, 100);
    assert_eq!(get(&cache, &key("a"), &value, &calls), value);
    assert_eq!(get(&cache, &key("a"), &value, &calls), value);
    assert_eq!(calls.get(), 1);
    assert_eq!(cache.stats(), stats(1, 0, 1, 0));
    // Another spec is another entry.
    get(&cache, &key("b"), &value, &calls);
    assert_eq!(calls.get(), 2);
}

#[test]
fn a_fresh_cache_on_the_same_dir_hits_the_disk() {
    let dir = TempDir::new("fresh");
    let value = payload(2, 1000);
    let calls = Cell::new(0);
    let first = KernelCache::in_dir(&dir.0).unwrap();
    get(&first, &key("a"), &value, &calls);
    assert_eq!(first.stats(), stats(0, 0, 1, 0));
    let second = KernelCache::in_dir(&dir.0).unwrap();
    assert_eq!(get(&second, &key("a"), &value, &calls), value);
    assert_eq!(get(&second, &key("a"), &value, &calls), value);
    assert_eq!(calls.get(), 1, "the second instance must not compute");
    assert_eq!(second.stats(), stats(1, 1, 0, 0));
    // Another codegen version misses.
    let newer = CacheKey {
        codegen_version: "codegen-2".to_string(),
        ..key("a")
    };
    get(&second, &newer, &value, &calls);
    assert_eq!(calls.get(), 2);
}

#[test]
fn compute_errors_pass_through_and_store_nothing() {
    let cache = KernelCache::memory_only();
    let result = cache.get_or_insert_with(&key("a"), || Err::<Vec<u8>, _>("codegen failed"));
    assert_eq!(result.unwrap_err(), "codegen failed");
    let calls = Cell::new(0);
    get(&cache, &key("a"), b"ok", &calls);
    assert_eq!(calls.get(), 1);
}

/// Damages the entry file, then checks that a fresh cache detects it,
/// recomputes, rewrites, and that the rewritten file is served again.
fn check_damage_is_repaired(name: &str, damage: impl Fn(&Path)) {
    let dir = TempDir::new(name);
    let value = payload(3, 4096);
    let calls = Cell::new(0);
    let cache = KernelCache::in_dir(&dir.0).unwrap();
    get(&cache, &key("a"), &value, &calls);
    let path = cache.entry_path(&key("a")).unwrap();
    damage(&path);

    let repairing = KernelCache::in_dir(&dir.0).unwrap();
    assert_eq!(get(&repairing, &key("a"), &value, &calls), value, "{name}");
    assert_eq!(
        calls.get(),
        2,
        "{name}: the damaged entry must be recomputed"
    );
    assert_eq!(repairing.stats(), stats(0, 0, 1, 1), "{name}");

    let after = KernelCache::in_dir(&dir.0).unwrap();
    assert_eq!(get(&after, &key("a"), &value, &calls), value, "{name}");
    assert_eq!(calls.get(), 2, "{name}: the rewritten entry must be valid");
    assert_eq!(after.stats(), stats(0, 1, 0, 0), "{name}");
}

fn edit(path: &Path, change: impl Fn(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    change(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_truncated_entry_is_recomputed() {
    check_damage_is_repaired("truncated", |path| {
        edit(path, |b| b.truncate(b.len() - 100))
    });
    check_damage_is_repaired("header-only", |path| edit(path, |b| b.truncate(20)));
    check_damage_is_repaired("empty", |path| edit(path, Vec::clear));
}

#[test]
fn a_flipped_byte_is_recomputed() {
    // In the payload, in the checksum, in the magic, in the key. (Another
    // format version is not damage: see
    // `an_unloadable_entry_with_a_valid_checksum_is_evicted_and_rebuilt`.)
    check_damage_is_repaired("flip-payload", |path| {
        edit(path, |b| *b.last_mut().unwrap() ^= 1)
    });
    check_damage_is_repaired("flip-checksum", |path| edit(path, |b| b[30] ^= 0x80));
    check_damage_is_repaired("flip-magic", |path| edit(path, |b| b[0] ^= 1));
    check_damage_is_repaired("flip-key", |path| edit(path, |b| b[60] ^= 4));
    check_damage_is_repaired("appended", |path| edit(path, |b| b.push(0)));
}

#[test]
fn an_entry_of_another_key_is_not_served() {
    let dir = TempDir::new("other-key");
    let cache = KernelCache::in_dir(&dir.0).unwrap();
    let calls = Cell::new(0);
    get(&cache, &key("a"), b"entry of a", &calls);
    get(&cache, &key("b"), b"entry of b", &calls);
    // A valid file, under the wrong name.
    std::fs::copy(
        cache.entry_path(&key("a")).unwrap(),
        cache.entry_path(&key("b")).unwrap(),
    )
    .unwrap();
    let fresh = KernelCache::in_dir(&dir.0).unwrap();
    assert_eq!(get(&fresh, &key("b"), b"entry of b", &calls), b"entry of b");
    assert_eq!(fresh.stats(), stats(0, 0, 1, 1));
}

#[test]
fn typed_entries_that_do_not_decode_are_recomputed() {
    let dir = TempDir::new("typed");
    let cache = KernelCache::in_dir(&dir.0).unwrap();
    // A valid file whose payload is not UTF-8.
    cache
        .insert(&key("a"), vec![0xFF, 0xFE])
        .expect("write the entry");
    let fresh = KernelCache::in_dir(&dir.0).unwrap();
    let text = fresh
        .get_or_insert_entry(&key("a"), || {
            Ok::<_, std::convert::Infallible>(".version 8.0".to_string())
        })
        .unwrap();
    assert_eq!(text, ".version 8.0");
    // Intact but undecodable: evicted, not corrupt.
    assert_eq!(
        fresh.stats(),
        CacheStats {
            misses: 1,
            evicted: 1,
            ..CacheStats::default()
        }
    );
    let again = KernelCache::in_dir(&dir.0).unwrap();
    let text: String = again
        .get_or_insert_entry(&key("a"), || Err("must not compute"))
        .unwrap();
    assert_eq!(text, ".version 8.0");
}

/// The entry files of a directory, and whether any temporary file is left.
fn entries(dir: &Path) -> (usize, Vec<String>) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let leftovers = names
        .iter()
        .filter(|n| !n.ends_with(".jkc"))
        .cloned()
        .collect();
    (
        names.iter().filter(|n| n.ends_with(".jkc")).count(),
        leftovers,
    )
}

const SHARED_LEN: usize = 1 << 20;

/// Reads `key` through a fresh cache instance (as another process would);
/// panics if the file on disk is not a whole, valid entry.
fn read_fresh(dir: &Path, expected: &[u8]) {
    let reader = KernelCache::in_dir(dir).unwrap();
    let read = reader
        .get_or_insert_with(&key("shared"), || Err("a reader saw no valid entry"))
        .unwrap();
    assert!(*read == *expected, "a reader saw other bytes");
    assert_eq!(reader.stats().corrupt, 0);
}

#[test]
fn threads_with_separate_caches_fill_one_entry() {
    let dir = TempDir::new("threads");
    let (fillers, readers) = (4, 4);
    let barrier = Arc::new(Barrier::new(fillers));
    let fill_handles: Vec<_> = (0..fillers)
        .map(|_| {
            let barrier = barrier.clone();
            let dir = dir.0.clone();
            std::thread::spawn(move || {
                let cache = KernelCache::in_dir(&dir).unwrap();
                barrier.wait();
                let got = cache
                    .get_or_insert_with(&key("shared"), || Ok::<_, ()>(payload(7, SHARED_LEN)))
                    .unwrap();
                assert!(*got == payload(7, SHARED_LEN)[..]);
                cache.stats()
            })
        })
        .collect();
    for handle in fill_handles {
        let stats = handle.join().expect("filler thread");
        assert_eq!(stats.corrupt, 0);
        assert_eq!(stats.disk_errors, 0);
    }
    // Now rewrite the entry over and over while fresh instances read it.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let read_handles: Vec<_> = (0..readers)
        .map(|_| {
            let (dir, done) = (dir.0.clone(), done.clone());
            std::thread::spawn(move || {
                let expected = payload(7, SHARED_LEN);
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                    read_fresh(&dir, &expected);
                    reads += 1;
                }
            })
        })
        .collect();
    let writer = KernelCache::in_dir(&dir.0).unwrap();
    let value = payload(7, SHARED_LEN);
    for _ in 0..40 {
        writer
            .insert(&key("shared"), value.clone())
            .expect("write the entry");
    }
    assert_eq!(writer.stats().disk_errors, 0);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for handle in read_handles {
        handle.join().expect("reader thread");
    }
    assert_eq!(entries(&dir.0), (1, Vec::new()));
}

/// The environment variable that turns `process_child` into a worker.
const CHILD_ENV: &str = "JAGGED_CACHE_TEST_CHILD_DIR";

/// A worker of `processes_fill_one_entry`: does nothing in a normal run.
#[test]
fn process_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let cache = KernelCache::in_dir(&dir).unwrap();
    let value = payload(9, SHARED_LEN);
    let got = cache
        .get_or_insert_with(&key("shared"), || Ok::<_, ()>(value.clone()))
        .unwrap();
    assert!(*got == value[..]);
    // Rewrite and read, interleaved with the other processes doing the same.
    for _ in 0..20 {
        cache
            .insert(&key("shared"), value.clone())
            .expect("write the entry");
        for _ in 0..5 {
            read_fresh(&dir, &value);
        }
    }
    assert_eq!(cache.stats().corrupt, 0, "a process read a partial entry");
    assert_eq!(cache.stats().disk_errors, 0);
}

#[test]
fn processes_fill_one_entry() {
    let dir = TempDir::new("processes");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "process_child", "--test-threads", "1", "--quiet"])
                .env(CHILD_ENV, &dir.0)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the test binary")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "a child process failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let cache = KernelCache::in_dir(&dir.0).unwrap();
    let got = cache
        .get_or_insert_with(&key("shared"), || Err("no valid entry after the processes"))
        .unwrap();
    assert!(*got == payload(9, SHARED_LEN)[..]);
    assert_eq!(entries(&dir.0), (1, Vec::new()));
}

#[test]
fn the_default_dir_honours_the_environment() {
    // Only checks the variable when the test runner sets it, to avoid
    // mutating the environment of a multi-threaded test process.
    let dir = KernelCache::default_dir();
    if let Some(set) = std::env::var_os("JAGGED_CACHE_DIR").filter(|d| !d.is_empty()) {
        assert_eq!(dir.as_deref(), Some(Path::new(&set)));
    } else if let Some(dir) = dir {
        assert!(dir.ends_with("jagged"), "{}", dir.display());
    }
}

#[test]
fn an_unloadable_entry_with_a_valid_checksum_is_evicted_and_rebuilt() {
    let dir = TempDir::new("unloadable");
    let writer = KernelCache::in_dir(&dir.0).unwrap();
    // Written by an older format version: the checksum (over key and
    // payload) is valid, the layout is not this version's.
    writer
        .insert(&key("old"), payload(4, 512))
        .expect("write the entry");
    let old = writer.entry_path(&key("old")).unwrap();
    edit(&old, |b| b[8..12].copy_from_slice(&0u32.to_le_bytes()));
    // A valid file whose payload does not decode (not UTF-8).
    writer
        .insert(&key("text"), vec![0xFF, 0xFE])
        .expect("write the entry");
    let text = writer.entry_path(&key("text")).unwrap();

    // A run that meets them evicts them even when it cannot rebuild them,
    // so that no later run meets them again.
    let failing = KernelCache::in_dir(&dir.0).unwrap();
    assert!(
        failing
            .get_or_insert_with(&key("old"), || Err("codegen failed"))
            .is_err()
    );
    let decoded = failing.get_or_insert_entry::<String, _>(&key("text"), || Err("codegen failed"));
    assert!(decoded.is_err());
    assert!(
        !old.exists(),
        "the entry of another format version is still there"
    );
    assert!(!text.exists(), "the undecodable entry is still there");
    assert_eq!((failing.stats().evicted, failing.stats().corrupt), (2, 0));

    // Met with a working code generator: evicted, rebuilt, rewritten.
    writer
        .insert(&key("old"), payload(4, 512))
        .expect("write the entry");
    edit(&old, |b| b[8..12].copy_from_slice(&0u32.to_le_bytes()));
    let rebuilding = KernelCache::in_dir(&dir.0).unwrap();
    let calls = Cell::new(0);
    assert_eq!(
        get(&rebuilding, &key("old"), &payload(4, 512), &calls),
        payload(4, 512)
    );
    assert_eq!(calls.get(), 1);
    assert_eq!(
        rebuilding.stats(),
        CacheStats {
            misses: 1,
            evicted: 1,
            ..CacheStats::default()
        }
    );
    // The next run reads the rebuilt entry.
    let after = KernelCache::in_dir(&dir.0).unwrap();
    assert_eq!(
        get(&after, &key("old"), &payload(4, 512), &calls),
        payload(4, 512)
    );
    assert_eq!(calls.get(), 1, "the rebuilt entry must be served");
    assert_eq!(after.stats(), stats(0, 1, 0, 0));
}

/// Runs `body` on its own thread and returns its result, or `None` if it
/// has not finished after a minute (far longer than a lookup takes on a
/// loaded machine), so that a hang fails the test instead of stalling it.
fn within_a_minute<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(body());
    });
    receiver.recv_timeout(Duration::from_secs(60)).ok()
}

/// Opens the FIFO for writing and closes it, on a thread that is never
/// joined: a reader blocked opening it then sees end of file.
fn release_fifo(path: &Path) {
    let path = path.to_path_buf();
    std::thread::spawn(move || drop(std::fs::OpenOptions::new().write(true).open(path)));
}

#[test]
fn a_fifo_at_the_entry_path_is_a_miss_and_is_replaced() {
    let dir = TempDir::new("fifo");
    let path = KernelCache::in_dir(&dir.0)
        .unwrap()
        .entry_path(&key("a"))
        .unwrap();
    let made = Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");

    let shared = dir.0.clone();
    let outcome = within_a_minute(move || {
        let cache = KernelCache::in_dir(&shared).unwrap();
        let calls = Cell::new(0);
        let got = get(&cache, &key("a"), b"rebuilt", &calls);
        (got, calls.get(), cache.stats())
    });
    let Some((got, calls, stats)) = outcome else {
        release_fifo(&path);
        panic!("the cache hung on a FIFO at the entry path");
    };
    assert_eq!((got.as_slice(), calls), (&b"rebuilt"[..], 1));
    assert_eq!(stats, self::stats(0, 0, 1, 0));
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_file(),
        "the FIFO must be replaced by the entry"
    );
    // The replacement is served.
    let after = KernelCache::in_dir(&dir.0).unwrap();
    let calls = Cell::new(0);
    assert_eq!(get(&after, &key("a"), b"rebuilt", &calls), b"rebuilt");
    assert_eq!((calls.get(), after.stats()), (0, self::stats(0, 1, 0, 0)));

    // A non-empty directory at the entry path cannot be replaced: a miss,
    // the value is kept in memory, and storing it reports a typed error.
    let blocked = after.entry_path(&key("b")).unwrap();
    std::fs::create_dir_all(blocked.join("inside")).unwrap();
    let shared = dir.0.clone();
    let outcome = within_a_minute(move || {
        let cache = KernelCache::in_dir(&shared).unwrap();
        let calls = Cell::new(0);
        let first = get(&cache, &key("b"), b"in memory", &calls);
        let second = get(&cache, &key("b"), b"in memory", &calls);
        let inserted = cache.insert(&key("b"), b"again".to_vec());
        (first, second, calls.get(), cache.stats(), inserted)
    });
    let (first, second, calls, stats, inserted) = outcome.expect("the cache hung on a directory");
    assert_eq!(
        (first, second, calls),
        (b"in memory".to_vec(), b"in memory".to_vec(), 1)
    );
    assert_eq!(
        (stats.misses, stats.memory_hits, stats.disk_errors),
        (1, 1, 2)
    );
    match inserted {
        Err(CacheError::Write { path, .. }) => assert_eq!(path, blocked),
        other => panic!("expected CacheError::Write, got {other:?}"),
    }
}

/// The environment variable that turns `unwritable_dir_child` into a worker.
const UNWRITABLE_CHILD_ENV: &str = "JAGGED_CACHE_TEST_UNWRITABLE_CHILD";

/// A worker of `an_unwritable_cache_dir_is_reported_once_and_in_the_stats`,
/// run with `JAGGED_CACHE_DIR` naming a regular file: two runtimes take
/// their default cache. Does nothing in a normal run.
#[test]
fn unwritable_dir_child() {
    let Some(dir) = std::env::var_os(UNWRITABLE_CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    for _ in 0..2 {
        let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
        let cache = rt.kernel_cache();
        assert_eq!(cache.dir(), None);
        let reason = cache.stats().disk_disabled.expect("disk_disabled is set");
        assert!(reason.contains(&dir.display().to_string()), "{reason}");
        // Still a working cache, in memory.
        let calls = Cell::new(0);
        get(&cache, &key("a"), b"value", &calls);
        get(&cache, &key("a"), b"value", &calls);
        assert_eq!(calls.get(), 1);
    }
}

#[test]
fn an_unwritable_cache_dir_is_reported_once_and_in_the_stats() {
    let dir = TempDir::new("unwritable");
    // Tests run as root, which writes through any permission bits: the
    // directory is unusable because its path is a regular file.
    let not_a_dir = dir.0.join("cache");
    std::fs::write(&not_a_dir, b"not a directory").unwrap();

    let cache = KernelCache::in_dir_or_memory(&not_a_dir);
    assert_eq!(cache.dir(), None);
    let reason = cache.stats().disk_disabled.expect("disk_disabled is set");
    assert!(
        reason.contains(&not_a_dir.display().to_string()),
        "{reason}"
    );
    assert_eq!(KernelCache::memory_only().stats().disk_disabled, None);
    assert_eq!(
        KernelCache::in_dir(&dir.0).unwrap().stats().disk_disabled,
        None
    );

    // Through the runtime's default cache, in a process of its own so that
    // its stderr can be read: one line, naming the directory and the reason.
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "unwritable_dir_child",
            "--test-threads",
            "1",
            "--quiet",
            "--nocapture",
        ])
        .env(UNWRITABLE_CHILD_ENV, &not_a_dir)
        .env("JAGGED_CACHE_DIR", &not_a_dir)
        .output()
        .expect("spawn the test binary");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child failed: {stdout}\n{stderr}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(&not_a_dir.display().to_string()))
        .collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].contains("memory"), "{}", lines[0]);
}

/// Sets the modification (use) time of `path` to `seconds` before now.
fn set_age(path: &Path, seconds: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(seconds))
        .unwrap();
}

/// The entry files of `dir` and their total size.
fn disk_usage(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jkc"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn the_disk_cache_is_bounded_and_evicts_the_least_recently_used() {
    let dir = TempDir::new("bounded");
    assert_eq!(
        KernelCache::in_dir(&dir.0).unwrap().max_disk_bytes(),
        DEFAULT_MAX_DISK_BYTES
    );
    // Every entry file has the same size (same payload and key lengths).
    let probe = KernelCache::in_dir(&dir.0).unwrap();
    probe.insert(&key("p"), payload(0, 1000)).unwrap();
    let entry_bytes = std::fs::metadata(probe.entry_path(&key("p")).unwrap())
        .unwrap()
        .len();
    probe.evict(&key("p"));
    // Room for three entries.
    let limit = 3 * entry_bytes + entry_bytes / 2;
    let bounded = || {
        KernelCache::in_dir(&dir.0)
            .unwrap()
            .with_max_disk_bytes(limit)
    };

    let writer = bounded();
    for (name, age) in [("a", 300), ("b", 200), ("c", 100)] {
        writer.insert(&key(name), payload(1, 1000)).unwrap();
        // Explicit, well-separated times of use: no reliance on the clock's
        // resolution or on how fast this runs.
        set_age(&writer.entry_path(&key(name)).unwrap(), age);
    }
    assert_eq!(writer.stats().trimmed, 0);
    let path = |name: &str| writer.entry_path(&key(name)).unwrap();
    let used = |name: &str| std::fs::metadata(path(name)).unwrap().modified().unwrap();

    // A disk hit on the oldest entry marks it used: now the newest.
    let reader = bounded();
    let calls = Cell::new(0);
    get(&reader, &key("a"), &payload(1, 1000), &calls);
    assert_eq!((calls.get(), reader.stats().disk_hits), (0, 1));
    assert!(used("a") > used("c"), "a disk hit must mark the entry used");

    // A fourth entry does not fit: the least recently used one (b) goes.
    writer.insert(&key("d"), payload(1, 1000)).unwrap();
    assert_eq!(writer.stats().trimmed, 1);
    assert!(!path("b").exists(), "the least recently used entry must go");
    for name in ["a", "c", "d"] {
        assert!(path(name).exists(), "{name} must stay");
    }
    assert!(disk_usage(&dir.0) <= limit);
    // It is a plain miss afterwards.
    let later = bounded();
    get(&later, &key("b"), &payload(1, 1000), &calls);
    assert_eq!(calls.get(), 1);
    assert_eq!((later.stats().corrupt, later.stats().misses), (0, 1));

    // An entry larger than the bound stays in memory and evicts nothing.
    let before = disk_usage(&dir.0);
    writer
        .insert(&key("huge"), payload(2, limit as usize))
        .unwrap();
    assert!(!path("huge").exists());
    assert_eq!(disk_usage(&dir.0), before);
    get(&writer, &key("huge"), &payload(2, limit as usize), &calls);
    assert_eq!(calls.get(), 1, "served from memory");
}

#[test]
fn trimming_while_other_threads_read_never_serves_a_partial_entry() {
    let dir = TempDir::new("trim-race");
    let value = |k: u8| payload(k, 64 << 10);
    // Room for about two of the six entries: nearly every write trims.
    let limit = 2 * (64 << 10) + 4096;
    let handles: Vec<_> = (0..4u8)
        .map(|thread| {
            let dir = dir.0.clone();
            std::thread::spawn(move || {
                for i in 0..30u8 {
                    let k = (thread * 7 + i) % 6;
                    // A fresh instance each time, as another process would.
                    let cache = KernelCache::in_dir(&dir)
                        .unwrap()
                        .with_max_disk_bytes(limit);
                    let got = cache
                        .get_or_insert_with(&key(&k.to_string()), || Ok::<_, ()>(value(k)))
                        .unwrap();
                    assert!(*got == value(k)[..], "a reader saw other bytes");
                    let stats = cache.stats();
                    assert_eq!((stats.corrupt, stats.evicted, stats.disk_errors), (0, 0, 0));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("worker thread");
    }
    let last = KernelCache::in_dir(&dir.0)
        .unwrap()
        .with_max_disk_bytes(limit);
    last.insert(&key("last"), value(9)).unwrap();
    assert!(disk_usage(&dir.0) <= limit);
    assert!(entries(&dir.0).1.is_empty(), "temporary files left");
}

/// The environment variable that turns `env_child` into a worker.
const ENV_CHILD_ENV: &str = "JAGGED_CACHE_TEST_ENV_CHILD";

/// A worker of `the_disk_bound_is_read_from_the_environment`: prints what
/// the default cache makes of the environment. Does nothing in a normal run.
#[test]
fn env_child() {
    if std::env::var_os(ENV_CHILD_ENV).is_none() {
        return;
    }
    let cache = KernelCache::from_env_or_memory();
    println!(
        "max={} disabled={:?}",
        cache.max_disk_bytes(),
        cache.stats().disk_disabled
    );
}

/// What `env_child` prints with `JAGGED_CACHE_MAX_BYTES` set to `max`.
fn default_cache_with_max_bytes(dir: &Path, max: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "env_child", "--test-threads", "1", "--nocapture"])
        .env(ENV_CHILD_ENV, "1")
        .env("JAGGED_CACHE_DIR", dir)
        .env("JAGGED_CACHE_MAX_BYTES", max)
        .output()
        .expect("spawn the test binary");
    assert!(output.status.success(), "the child failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_disk_bound_is_read_from_the_environment() {
    let dir = TempDir::new("env-bound");
    assert!(default_cache_with_max_bytes(&dir.0, "12345").contains("max=12345 disabled=None"));
    let default = format!("max={DEFAULT_MAX_DISK_BYTES} disabled=None");
    assert!(default_cache_with_max_bytes(&dir.0, "").contains(&default));
    // A value that is not a number is an error, said in the stats.
    let bad = default_cache_with_max_bytes(&dir.0, "12 GiB");
    assert!(
        bad.contains("disabled=Some(") && bad.contains("JAGGED_CACHE_MAX_BYTES"),
        "{bad}"
    );
}

/// The graph and spec whose key `the_disk_key_is_the_codegen_version_not_the_executable` checks.
fn softmax_key() -> CacheKey {
    let graph = ops::jagged_softmax(&JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: vec![4],
    })
    .expect("graph");
    let spec = Spec::for_graph(&graph, 8, Arch::Sm80).expect("spec");
    graph_cache_key(&graph, &spec)
}

/// The environment variable that turns `key_child` into a worker.
const KEY_CHILD_ENV: &str = "JAGGED_CACHE_TEST_KEY_CHILD";

/// A worker of `the_disk_key_is_the_codegen_version_not_the_executable`:
/// prints the key this executable computes. Does nothing in a normal run.
#[test]
fn key_child() {
    if std::env::var_os(KEY_CHILD_ENV).is_some() {
        println!("key<{}>", softmax_key().to_string().escape_debug());
    }
}

#[test]
fn the_disk_key_is_the_codegen_version_not_the_executable() {
    let key = softmax_key();
    assert_eq!(key.codegen_version, codegen_key());
    assert!(key.codegen_version.starts_with(CODEGEN_VERSION));
    // The code generator's source hash: 16 hex digits after the version.
    let hash = &key.codegen_version[CODEGEN_VERSION.len()..];
    assert!(
        hash.len() == 17
            && hash.starts_with('+')
            && hash[1..].chars().all(|c| c.is_ascii_hexdigit()),
        "{hash}"
    );

    // A rebuilt executable (here: a copy, with another modification time)
    // computes the same key, so it reads the entries the old one wrote.
    let dir = TempDir::new("rebuilt");
    let copy = dir.0.join("rebuilt-test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).expect("copy the test binary");
    set_age(&copy, 100_000);
    let output = Command::new(&copy)
        .args(["--exact", "key_child", "--test-threads", "1", "--nocapture"])
        .env(KEY_CHILD_ENV, "1")
        .output()
        .expect("run the copy");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the copy failed: {stdout}");
    let expected = format!("key<{}>", key.to_string().escape_debug());
    assert!(stdout.contains(&expected), "{expected}\nnot in\n{stdout}");
}

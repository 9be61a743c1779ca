//! The compiled-kernel cache: in memory, and on disk so that a second process
//! does no code generation either.
//!
//! An entry is opaque bytes (PTX text plus serialized launch metadata, in
//! whatever form the code generator chooses) stored under a [`CacheKey`].
//! On disk every entry is one file, `<dir>/<hex of blake3(key)>.jkc`:
//!
//! ```text
//! offset  size  field
//!      0     8  magic "JAGCACHE"
//!      8     4  format version (u32 little-endian)
//!     12     4  key length K (u32 little-endian)
//!     16     8  payload length P (u64 little-endian)
//!     24    32  blake3 of (key bytes ++ payload)
//!     56     K  key bytes (the canonical text of the CacheKey)
//!   56+K     P  payload
//! ```
//!
//! A file whose magic, lengths, checksum or key do not match is counted in
//! [`CacheStats::corrupt`]; a file whose checksum is valid but that this
//! build cannot load (another format version, or a payload that
//! [`CacheEntry::decode`] rejects) is counted in [`CacheStats::evicted`].
//! Either is removed as soon as it is found, so that no later run meets it
//! again even if this one cannot rebuild it, then recomputed and rewritten.
//! Writers fill a unique temporary file in the same directory and rename it
//! over the entry, so a reader never sees a partial file, and several threads
//! or processes may fill the same entry at once.
//!
//! The directory is bounded: after each write, the cache removes the least
//! recently used entries until their total size is at most
//! [`KernelCache::max_disk_bytes`] (`$JAGGED_CACHE_MAX_BYTES` for
//! [`KernelCache::from_env`], else [`DEFAULT_MAX_DISK_BYTES`]). Use is the
//! entry's modification time: set when it is written and again on every
//! disk hit. Several processes may share the directory: one removing an
//! entry that another is reading leaves the reader with the whole file it
//! opened, or a miss if it had not opened it yet, never a partial one.
//!
//! Only regular files are read: anything else at an entry's path (a FIFO, a
//! socket, a device, a directory) is a miss, checked before opening, and the
//! open itself does not block; the rename then replaces it atomically, or,
//! for a directory, fails with [`CacheError::Write`].

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What identifies one compiled artifact: the graph, the specialization and
/// the code generator that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// A hash of the graph's canonical text.
    pub graph_hash: [u8; 32],
    /// The canonical text of the specialization (head dim, max-len bucket, dtype, arch).
    pub spec: String,
    /// The code generator's version and source hash (`codegen_key`): another
    /// code generator never reads this entry.
    pub codegen_version: String,
}

impl CacheKey {
    /// Builds a key from a graph's canonical text, hashing it with blake3, so
    /// that any producer of a canonical text can key the cache.
    pub fn from_graph_text(
        canonical_graph: &str,
        spec: impl Into<String>,
        codegen_version: impl Into<String>,
    ) -> CacheKey {
        CacheKey {
            graph_hash: *blake3::hash(canonical_graph.as_bytes()).as_bytes(),
            spec: spec.into(),
            codegen_version: codegen_version.into(),
        }
    }

    /// The file name of this key's entry on disk.
    fn file_name(&self) -> String {
        let digest = blake3::hash(self.to_string().as_bytes());
        format!("{}.jkc", &digest.to_hex()[..32])
    }
}

/// The canonical text of a key; it is stored in the entry's header, so a
/// file-name collision is detected rather than served.
impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "graph=")?;
        for byte in self.graph_hash {
            write!(f, "{byte:02x}")?;
        }
        write!(
            f,
            "\nspec={}\ncodegen={}",
            self.spec.escape_debug(),
            self.codegen_version.escape_debug()
        )
    }
}

/// A value the cache can store: an encoding to bytes and back.
pub trait CacheEntry: Sized {
    /// The bytes stored in the cache.
    fn encode(&self) -> Vec<u8>;
    /// Reads an entry back; `None` marks bytes this version cannot read,
    /// which the cache evicts, recomputes and rewrites
    /// ([`CacheStats::evicted`]).
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl CacheEntry for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

impl CacheEntry for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// Counters of what the cache did since it was created; tests use them to
/// assert that a second request does no code generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from memory.
    pub memory_hits: u64,
    /// Requests answered from a valid file on disk.
    pub disk_hits: u64,
    /// Requests that called the compute closure.
    pub misses: u64,
    /// Files found corrupt or truncated (bad magic, lengths, checksum or
    /// key); each was removed, recomputed and rewritten.
    pub corrupt: u64,
    /// Entries whose checksum was valid but that this build could not load
    /// (another format version, or a payload that does not decode), or that
    /// [`KernelCache::evict`] removed: each was removed from memory and
    /// disk, then recomputed and rewritten when next asked for.
    pub evicted: u64,
    /// Entries this cache removed from disk, least recently used first, to
    /// keep the directory under [`KernelCache::max_disk_bytes`].
    pub trimmed: u64,
    /// Disk reads or writes that failed for another reason (permissions, full
    /// disk); the cache then keeps working in memory.
    pub disk_errors: u64,
    /// Why this cache has no disk although one was asked for (its directory
    /// cannot be created or written, or there is no cache directory), naming
    /// the directory; `None` when it has one, or was made memory-only.
    pub disk_disabled: Option<String>,
}

#[derive(Default)]
struct Counters {
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    evicted: AtomicU64,
    trimmed: AtomicU64,
    disk_errors: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Errors of the on-disk cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// An entry could not be written, or what is at its path (e.g. a
    /// directory) could not be replaced by it.
    #[error("cannot write cache entry {path}: {source}")]
    Write {
        /// The entry's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cache directory could not be created.
    #[error("cannot create cache directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `$JAGGED_CACHE_MAX_BYTES` is not a number of bytes.
    #[error("{CACHE_MAX_BYTES_ENV}={value:?} is not a number of bytes")]
    InvalidMaxBytes {
        /// The variable's value.
        value: String,
    },
    /// The cache directory exists but a file cannot be created in it.
    #[error("cannot write in cache directory {path}: {source}")]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The environment variable that names the on-disk cache directory.
pub const CACHE_DIR_ENV: &str = "JAGGED_CACHE_DIR";

/// The environment variable that bounds the on-disk cache, in bytes
/// (read by [`KernelCache::from_env`]).
pub const CACHE_MAX_BYTES_ENV: &str = "JAGGED_CACHE_MAX_BYTES";

/// The default bound of the on-disk cache: 1 GiB.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 1 << 30;

/// Temporary files older than this are leftovers of a crashed writer, removed
/// when the directory is trimmed.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// [`CacheStats::disk_disabled`] when there is no directory to use.
const NO_DIR: &str =
    "no cache directory: JAGGED_CACHE_DIR is unset and the platform has no user cache directory";

const MAGIC: &[u8; 8] = b"JAGCACHE";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 32;

/// A cache of compiled kernels, in memory and optionally on disk. It is
/// `Sync`: share it between threads by reference or `Arc`.
pub struct KernelCache {
    dir: Option<PathBuf>,
    /// Why there is no `dir` although one was asked for.
    disk_disabled: Option<String>,
    /// The bound of the entries' total size on disk.
    max_disk_bytes: u64,
    memory: Mutex<HashMap<CacheKey, Arc<[u8]>>>,
    counters: Counters,
}

impl KernelCache {
    /// A cache that keeps entries in memory only.
    pub fn memory_only() -> KernelCache {
        KernelCache {
            dir: None,
            disk_disabled: None,
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
            memory: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }

    /// A cache backed by `dir`, which is created if missing; an error if it
    /// cannot be created or a file cannot be created in it. Its size bound is
    /// [`DEFAULT_MAX_DISK_BYTES`] (see [`KernelCache::with_max_disk_bytes`]).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<KernelCache, CacheError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| CacheError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        probe_writable(&dir).map_err(|source| CacheError::NotWritable {
            path: dir.clone(),
            source,
        })?;
        Ok(KernelCache {
            dir: Some(dir),
            ..KernelCache::memory_only()
        })
    }

    /// [`KernelCache::in_dir`], or, if `dir` is not usable, a memory-only
    /// cache that says why in [`CacheStats::disk_disabled`] and once per
    /// process on stderr.
    pub fn in_dir_or_memory(dir: impl Into<PathBuf>) -> KernelCache {
        KernelCache::in_dir(dir)
            .unwrap_or_else(|err| KernelCache::disk_disabled(err.to_string()))
            .warn_if_disk_disabled()
    }

    /// The default cache: directory `$JAGGED_CACHE_DIR`, else the user's
    /// cache directory + `jagged`, else memory only (with
    /// [`CacheStats::disk_disabled`] saying so); bounded by
    /// `$JAGGED_CACHE_MAX_BYTES` bytes, else [`DEFAULT_MAX_DISK_BYTES`].
    pub fn from_env() -> Result<KernelCache, CacheError> {
        let max_bytes = match std::env::var_os(CACHE_MAX_BYTES_ENV) {
            Some(value) if !value.is_empty() => {
                let value = value.to_string_lossy();
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| CacheError::InvalidMaxBytes {
                        value: value.into_owned(),
                    })?
            }
            _ => DEFAULT_MAX_DISK_BYTES,
        };
        match KernelCache::default_dir() {
            Some(dir) => Ok(KernelCache::in_dir(dir)?.with_max_disk_bytes(max_bytes)),
            None => Ok(KernelCache {
                disk_disabled: Some(NO_DIR.to_string()),
                ..KernelCache::memory_only()
            }),
        }
    }

    /// [`KernelCache::from_env`], falling back to memory when the directory
    /// is not usable; the reason is in [`CacheStats::disk_disabled`] and on
    /// stderr, once per process.
    pub fn from_env_or_memory() -> KernelCache {
        KernelCache::from_env()
            .unwrap_or_else(|err| KernelCache::disk_disabled(err.to_string()))
            .warn_if_disk_disabled()
    }

    /// Says on stderr why the disk is off, if it is (once per process and
    /// reason).
    fn warn_if_disk_disabled(self) -> KernelCache {
        if let Some(reason) = &self.disk_disabled {
            warn_once(reason);
        }
        self
    }

    /// A memory-only cache whose disk is off for `reason`.
    fn disk_disabled(reason: String) -> KernelCache {
        KernelCache {
            disk_disabled: Some(reason),
            ..KernelCache::memory_only()
        }
    }

    /// The directory [`KernelCache::from_env`] uses: `$JAGGED_CACHE_DIR`,
    /// else the platform cache directory + `jagged`.
    pub fn default_dir() -> Option<PathBuf> {
        match std::env::var_os(CACHE_DIR_ENV) {
            Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
            _ => dirs::cache_dir().map(|dir| dir.join("jagged")),
        }
    }

    /// The same cache with its entries' total size on disk bounded by
    /// `bytes` (an entry larger than that is kept in memory only).
    pub fn with_max_disk_bytes(self, bytes: u64) -> KernelCache {
        KernelCache {
            max_disk_bytes: bytes,
            ..self
        }
    }

    /// The bound of the entries' total size on disk.
    pub fn max_disk_bytes(&self) -> u64 {
        self.max_disk_bytes
    }

    /// The directory of the on-disk entries, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Where `key`'s entry lives on disk, if the cache has a directory.
    pub fn entry_path(&self, key: &CacheKey) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(key.file_name()))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
            disk_hits: c.disk_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            trimmed: c.trimmed.load(Ordering::Relaxed),
            disk_errors: c.disk_errors.load(Ordering::Relaxed),
            disk_disabled: self.disk_disabled.clone(),
        }
    }

    /// Returns `key`'s bytes, calling `compute` only when neither memory nor
    /// disk holds a valid entry; its result is then stored in both.
    pub fn get_or_insert_with<E>(
        &self,
        key: &CacheKey,
        compute: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<[u8]>, E> {
        if let Some(bytes) = self.lookup(key, |bytes| Some(bytes.clone())) {
            return Ok(bytes);
        }
        Counters::bump(&self.counters.misses);
        let bytes: Arc<[u8]> = compute()?.into();
        // A disk failure is counted; the entry is still served from memory.
        let _ = self.store(key, bytes.clone());
        Ok(bytes)
    }

    /// The typed form of [`KernelCache::get_or_insert_with`]: an entry that
    /// does not decode is evicted and recomputed.
    pub fn get_or_insert_entry<T: CacheEntry, E>(
        &self,
        key: &CacheKey,
        compute: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(value) = self.lookup(key, |bytes| T::decode(bytes)) {
            return Ok(value);
        }
        Counters::bump(&self.counters.misses);
        let value = compute()?;
        // A disk failure is counted; the entry is still served from memory.
        let _ = self.store(key, value.encode().into());
        Ok(value)
    }

    /// Stores `payload` under `key`, replacing any entry: for artifacts
    /// produced elsewhere (ahead-of-time specializations). The entry is in
    /// memory in any case; the error says why it is not on disk.
    pub fn insert(&self, key: &CacheKey, payload: Vec<u8>) -> Result<(), CacheError> {
        self.store(key, payload.into())
    }

    /// Removes `key`'s entry from memory and disk, e.g. after the caller
    /// found that a served entry cannot be used; counted in
    /// [`CacheStats::evicted`] when there was one.
    pub fn evict(&self, key: &CacheKey) {
        let in_memory = self.memory_map().remove(key).is_some();
        let on_disk = self
            .entry_path(key)
            .is_some_and(|path| fs::remove_file(path).is_ok());
        if in_memory || on_disk {
            Counters::bump(&self.counters.evicted);
        }
    }

    /// Memory, then disk; `decode` rejecting an entry makes it a miss, and
    /// the entry is evicted (and a damaged file removed) on the spot.
    fn lookup<T>(&self, key: &CacheKey, decode: impl Fn(&Arc<[u8]>) -> Option<T>) -> Option<T> {
        let in_memory = self.memory_map().get(key).cloned();
        if let Some(bytes) = in_memory {
            if let Some(value) = decode(&bytes) {
                Counters::bump(&self.counters.memory_hits);
                return Some(value);
            }
            self.memory_map().remove(key);
            Counters::bump(&self.counters.evicted);
        }
        let path = self.entry_path(key)?;
        let (file, read_from, handle) = match read_file(&path) {
            Ok(Some(read)) => read,
            // Not a regular file: a miss, replaced when the entry is stored.
            Ok(None) => return None,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(_) => {
                Counters::bump(&self.counters.disk_errors);
                return None;
            }
        };
        let fault = match parse_entry(&file, key) {
            Ok(payload) => {
                let payload = Arc::<[u8]>::from(payload);
                match decode(&payload) {
                    Some(value) => {
                        Counters::bump(&self.counters.disk_hits);
                        // Marks the entry used, for trimming. Best effort:
                        // only the file's owner may set its time.
                        let _ = handle.set_modified(SystemTime::now());
                        self.memory_map().insert(key.clone(), payload);
                        return Some(value);
                    }
                    None => Fault::Unloadable,
                }
            }
            Err(fault) => fault,
        };
        remove_if_unchanged(&path, &read_from);
        Counters::bump(match fault {
            Fault::Corrupt => &self.counters.corrupt,
            Fault::Unloadable => &self.counters.evicted,
        });
        None
    }

    /// Stores in memory, then on disk; a disk failure is counted in
    /// [`CacheStats::disk_errors`] and returned.
    /// An entry larger than [`KernelCache::max_disk_bytes`] stays in memory.
    fn store(&self, key: &CacheKey, payload: Arc<[u8]>) -> Result<(), CacheError> {
        self.memory_map().insert(key.clone(), payload.clone());
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let file = encode_entry(key, &payload);
        if u64::try_from(file.len()).map_or(true, |len| len > self.max_disk_bytes) {
            return Ok(());
        }
        let written = write_entry(dir, &key.file_name(), &file);
        match written {
            Ok(()) => self.trim(dir),
            Err(_) => Counters::bump(&self.counters.disk_errors),
        }
        written
    }

    /// Removes the least recently used entries of `dir` until their total
    /// size is at most the bound, and temporary files left by crashed
    /// writers. Another process may be trimming or reading at the same time:
    /// entries already gone are skipped, and an entry replaced since it was
    /// listed is left alone.
    fn trim(&self, dir: &Path) {
        let Ok(listing) = fs::read_dir(dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut total: u64 = 0;
        for item in listing.flatten() {
            let name = item.file_name();
            let name = name.to_string_lossy();
            let Ok(metadata) = fs::symlink_metadata(item.path()) else {
                continue;
            };
            if !metadata.is_file() {
                continue;
            }
            let modified = metadata.modified().unwrap_or(UNIX_EPOCH);
            if name.starts_with('.') && name.ends_with(".tmp") {
                if now
                    .duration_since(modified)
                    .is_ok_and(|age| age > STALE_TEMP_AGE)
                {
                    let _ = fs::remove_file(item.path());
                }
            } else if name.ends_with(".jkc") {
                total = total.saturating_add(metadata.len());
                entries.push((modified, item.path(), metadata));
            }
        }
        if total <= self.max_disk_bytes {
            return;
        }
        entries.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (_, path, metadata) in entries {
            if total <= self.max_disk_bytes {
                break;
            }
            if remove_if_unchanged(&path, &metadata) {
                Counters::bump(&self.counters.trimmed);
            }
            // Removed here or by another process: either way it is gone.
            total = total.saturating_sub(metadata.len());
        }
    }

    /// The memory map; a panic in another thread while it held the lock
    /// cannot leave the map half-updated (inserts are single calls), so a
    /// poisoned lock is still used.
    fn memory_map(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Arc<[u8]>>> {
        self.memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Says on stderr, once per process and reason, that the disk cache is off.
fn warn_once(reason: &str) {
    static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !warned.iter().any(|done| done == reason) {
        eprintln!("jagged: kernel cache kept in memory only: {reason}");
        warned.push(reason.to_string());
    }
}

/// A unique name for a temporary file of this process.
fn temp_name(stem: &str) -> String {
    static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{stem}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates and removes a file in `dir`: can entries be written there?
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(temp_name("probe"));
    fs::File::create_new(&probe)?;
    fs::remove_file(&probe)
}

fn checksum(key: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(key);
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

/// The bytes of an entry file.
fn encode_entry(key: &CacheKey, payload: &[u8]) -> Vec<u8> {
    let key_text = key.to_string();
    let key_bytes = key_text.as_bytes();
    let mut file = Vec::with_capacity(HEADER_LEN + key_bytes.len() + payload.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // A key's text is a hash and two short strings: far below 4 GiB.
    file.extend_from_slice(&(key_bytes.len() as u32).to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&checksum(key_bytes, payload));
    file.extend_from_slice(key_bytes);
    file.extend_from_slice(payload);
    file
}

/// Why an entry file was not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Damaged: bad magic, lengths, checksum or key.
    Corrupt,
    /// Intact but unusable by this build: another format version (whose
    /// layout this build cannot check), or a payload that does not decode.
    Unloadable,
}

/// Reads a little-endian integer field of the header.
fn field<const N: usize>(header: &[u8], at: usize) -> Result<[u8; N], Fault> {
    header
        .get(at..at + N)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(Fault::Corrupt)
}

/// The payload of an entry file, or why it cannot be served.
fn parse_entry<'a>(file: &'a [u8], key: &CacheKey) -> Result<&'a [u8], Fault> {
    let header = file.get(..HEADER_LEN).ok_or(Fault::Corrupt)?;
    if &header[0..8] != MAGIC {
        return Err(Fault::Corrupt);
    }
    if u32::from_le_bytes(field(header, 8)?) != FORMAT_VERSION {
        return Err(Fault::Unloadable);
    }
    let key_len = usize::try_from(u32::from_le_bytes(field(header, 12)?));
    let payload_len = usize::try_from(u64::from_le_bytes(field(header, 16)?));
    let (Ok(key_len), Ok(payload_len)) = (key_len, payload_len) else {
        return Err(Fault::Corrupt);
    };
    let expected_len = HEADER_LEN
        .checked_add(key_len)
        .and_then(|len| len.checked_add(payload_len));
    if expected_len != Some(file.len()) {
        return Err(Fault::Corrupt);
    }
    let (key_bytes, payload) = file[HEADER_LEN..].split_at(key_len);
    if checksum(key_bytes, payload) != header[24..56] || key_bytes != key.to_string().as_bytes() {
        return Err(Fault::Corrupt);
    }
    Ok(payload)
}

/// The bytes of the regular file at `path` and its metadata, read through
/// one handle (so the metadata is that of the bytes read); `None` if `path`
/// is not a regular file. The type is checked before opening, and again on
/// the open handle, and the open does not block (a FIFO swapped in between
/// is then seen, not waited on).
fn read_file(path: &Path) -> std::io::Result<Option<(Vec<u8>, fs::Metadata, fs::File)>> {
    if !fs::metadata(path)?.is_file() {
        return Ok(None);
    }
    let mut file = open_nonblocking(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some((bytes, metadata, file)))
}

/// `O_NONBLOCK` where its value is known without the `libc` crate (opening a
/// FIFO with it returns at once; it changes nothing for regular files).
#[cfg(unix)]
const O_NONBLOCK: i32 = if cfg!(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)) {
    0x4
} else if cfg!(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv32",
        target_arch = "riscv64",
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
)) {
    0o4000
} else {
    // Unknown here: the file-type check before the open still applies.
    0
};

/// Opens `path` for reading without blocking on a FIFO.
#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
}

/// Opens `path` for reading (no FIFOs to block on off Unix).
#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<fs::File> {
    fs::File::open(path)
}

/// Whether two metadata describe the same file.
#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// Whether two metadata describe the same file (best effort off Unix).
#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// Removes the entry file at `path` unless another process already
/// replaced it with a new one (best effort: at worst a good entry is
/// removed, which is a miss later, never a wrong answer); whether it did.
fn remove_if_unchanged(path: &Path, read: &fs::Metadata) -> bool {
    fs::symlink_metadata(path).is_ok_and(|now| same_file(&now, read))
        && fs::remove_file(path).is_ok()
}

/// Writes the entry file `bytes` to a unique temporary file in `dir`, then
/// renames it to `name`: readers see the old file or the whole new one. The
/// rename replaces any non-directory at the entry's path.
fn write_entry(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CacheError> {
    let temp = dir.join(temp_name(name));
    let result = (|| {
        let mut file = fs::File::create_new(&temp)?;
        // No fsync: after a crash a torn entry fails its checksum and is
        // recomputed, which is all a cache needs.
        file.write_all(bytes)?;
        // The time of use, on the same clock as disk hits (the kernel's own
        // file times are coarser).
        file.set_modified(SystemTime::now())?;
        fs::rename(&temp, dir.join(name))
    })();
    result.map_err(|source| {
        // Best effort: a leftover temporary file is never read as an entry.
        let _ = fs::remove_file(&temp);
        CacheError::Write {
            path: dir.join(name),
            source,
        }
    })
}

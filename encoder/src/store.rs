//! Where segments and playlists go: the [`ObjectStore`] trait (a bucket in the distributed
//! mode, a directory in the embedded mode) and [`FilesystemStore`].
//!
//! The contract of `put` is the one the upload order rule relies on (SPEC §3): when it returns
//! `Ok`, the object is complete and readable under its key. Readers never see a partial object.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

/// Longest key accepted (S3's own limit).
pub const MAX_KEY_LENGTH: usize = 1024;

/// Why an object could not be stored or deleted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is not a relative path made of plain components (bad input, never retried).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The local filesystem failed (full disk, permissions).
    #[error("I/O error on object {key:?}: {source}")]
    Io {
        key: String,
        #[source]
        source: io::Error,
    },
    /// A remote store could not be reached, timed out, or answered with an error that may go
    /// away (5xx, throttling): retryable. `code` is the store's error code when it answered.
    #[error("store unavailable for object {key:?}: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Unavailable {
        key: String,
        code: Option<String>,
        message: String,
    },
    /// The store refused the request for good (access denied, no such bucket, bad
    /// credentials, request too large): trying again will not help.
    #[error("store refused object {key:?}: {code} (HTTP {status:?}): {message}")]
    Rejected {
        key: String,
        code: String,
        status: Option<u16>,
        message: String,
    },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::InvalidKey { .. } | StoreError::Rejected { .. } => false,
            StoreError::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
            ),
            StoreError::Unavailable { .. } => true,
        }
    }
}

/// How long an object is meant to live, for stores that can mark it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// Part of a recording (or not known): kept.
    #[default]
    Kept,
    /// An object of a stream that is not recorded: the encoder deletes it itself; S3 objects get
    /// the tag `vstream-live=1` so a bucket lifecycle rule removes what it could not delete.
    Live,
}

/// A bucket-like store of immutable objects and playlists.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores an object; when this returns Ok the object is readable. Content-Type /
    /// Cache-Control come from [`contract::keys::object_headers`] of the key.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    /// [`ObjectStore::put`] of an object with a known [`Retention`] (stores that cannot mark
    /// objects ignore it).
    async fn put_with(
        &self,
        key: &str,
        body: Bytes,
        retention: Retention,
    ) -> Result<(), StoreError> {
        let _ = retention;
        self.put(key, body).await
    }
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// Checks that a key is a relative path of plain components: no `..` or `.`, no empty
/// component, no leading `/`, no backslash or NUL, at most [`MAX_KEY_LENGTH`] bytes.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let invalid = |reason| {
        Err(StoreError::InvalidKey {
            key: key.chars().take(200).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > MAX_KEY_LENGTH {
        return invalid("too long");
    }
    if key.contains(['\\', '\0']) {
        return invalid("contains a backslash or NUL");
    }
    if key.starts_with('/') {
        return invalid("absolute path");
    }
    for component in key.split('/') {
        match component {
            "" => return invalid("empty path component"),
            "." | ".." => return invalid("relative path component"),
            _ => {}
        }
    }
    Ok(())
}

/// Objects as files under a root directory (`HLS_STORAGE_TYPE=FILESYSTEM`).
///
/// `put` writes a temporary file in the object's directory and renames it over the key, so a
/// concurrent reader (the embedded HTTP server, nginx) sees the old object or the new one,
/// never a partial one. Files are created readable by everyone (0644). A filesystem keeps no
/// headers: whatever serves the directory sets them with [`contract::keys::object_headers`].
#[derive(Debug, Clone)]
pub struct FilesystemStore {
    root: PathBuf,
}

impl FilesystemStore {
    pub fn new(root: PathBuf) -> Self {
        FilesystemStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key`, after validating the key.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "object path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".part")
        .tempfile_in(dir)?;
    temp.write_all(body)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    temp.persist(path).map_err(|err| err.error)?;
    Ok(())
}

#[async_trait]
impl ObjectStore for FilesystemStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &body))
            .await
            .map_err(|join| io::Error::other(join.to_string()))
            .and_then(|result| result)
            .map_err(|source| StoreError::Io {
                key: key.to_owned(),
                source,
            })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                self.remove_empty_parents(&path).await;
                Ok(())
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                key: key.to_owned(),
                source,
            }),
        }
    }
}

impl FilesystemStore {
    /// Removes the folders of a deleted object that became empty, up to the root (a bucket
    /// has no folders: a stream whose objects were all deleted leaves nothing behind). A
    /// folder that is not empty, or that a concurrent `put` filled again, stays.
    async fn remove_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(current) = dir {
            if current == self.root || !current.starts_with(&self.root) {
                break;
            }
            if tokio::fs::remove_dir(current).await.is_err() {
                break;
            }
            dir = current.parent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_leave_the_root_are_refused() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(
                matches!(validate_key(bad), Err(StoreError::InvalidKey { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(validate_key(&"a".repeat(MAX_KEY_LENGTH + 1)).is_err());
        validate_key("hls/demo/0123/640x360-30~800/12.ts").expect("a normal key");
        validate_key("a/..b/c..").expect("dots inside a name are fine");
    }

    #[tokio::test]
    async fn put_refuses_a_key_with_dot_dot_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let store = FilesystemStore::new(root.clone());
        let err = store
            .put("../x", Bytes::from_static(b"evil"))
            .await
            .expect_err("refused");
        assert!(!err.is_retryable());
        assert!(!dir.path().join("x").exists());
        assert!(store.delete("../x").await.is_err());
    }

    #[tokio::test]
    async fn put_writes_the_whole_object_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FilesystemStore::new(dir.path().to_path_buf());
        store
            .put("hls/c/s/r/0.ts", Bytes::from_static(b"first"))
            .await
            .expect("put");
        store
            .put("hls/c/s/r/0.ts", Bytes::from_static(b"second"))
            .await
            .expect("overwrite");
        let folder = dir.path().join("hls/c/s/r");
        assert_eq!(std::fs::read(folder.join("0.ts")).expect("read"), b"second");
        let names: Vec<_> = std::fs::read_dir(&folder)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["0.ts"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(folder.join("0.ts"))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        store.delete("hls/c/s/r/0.ts").await.expect("delete");
        store
            .delete("hls/c/s/r/0.ts")
            .await
            .expect("deleting a missing object is fine");
        assert!(!folder.join("0.ts").exists());
        assert!(!dir.path().join("hls").exists(), "empty folders removed");
        assert!(dir.path().exists(), "the root stays");
    }

    #[tokio::test]
    async fn deleting_one_object_keeps_its_neighbours_and_their_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FilesystemStore::new(dir.path().to_path_buf());
        for key in ["hls/c/s/r/0.ts", "hls/c/s/r/live.m3u8"] {
            store
                .put_with(key, Bytes::from_static(b"x"), Retention::Live)
                .await
                .expect("put");
        }
        store.delete("hls/c/s/r/0.ts").await.expect("delete");
        assert!(dir.path().join("hls/c/s/r/live.m3u8").is_file());
    }

    #[test]
    fn refusals_and_permissions_are_not_retried() {
        let io = |kind| StoreError::Io {
            key: "k".into(),
            source: io::Error::from(kind),
        };
        assert!(!io(io::ErrorKind::PermissionDenied).is_retryable());
        assert!(io(io::ErrorKind::Other).is_retryable());
        let rejected = StoreError::Rejected {
            key: "k".into(),
            code: "AccessDenied".into(),
            status: Some(403),
            message: "no".into(),
        };
        assert!(!rejected.is_retryable());
        assert!(rejected.to_string().contains("AccessDenied"));
        let down = StoreError::Unavailable {
            key: "k".into(),
            code: Some("SlowDown".into()),
            message: "please".into(),
        };
        assert!(down.is_retryable());
        assert!(down.to_string().contains("SlowDown: please"), "{down}");
    }

    #[tokio::test]
    async fn a_concurrent_reader_never_sees_a_partial_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FilesystemStore::new(dir.path().to_path_buf());
        const SIZE: usize = 4 << 20;
        store
            .put("k/live.m3u8", Bytes::from(vec![b'a'; SIZE]))
            .await
            .expect("put");
        let path = dir.path().join("k/live.m3u8");
        let reader = std::thread::spawn(move || {
            let mut reads = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(400);
            while std::time::Instant::now() < deadline {
                let data = std::fs::read(&path).expect("the object is always there");
                assert_eq!(data.len(), SIZE, "partial object seen");
                assert!(data.iter().all(|&b| b == data[0]), "mixed object seen");
                reads += 1;
            }
            reads
        });
        for i in 0..20u8 {
            let fill = if i % 2 == 0 { b'b' } else { b'a' };
            store
                .put("k/live.m3u8", Bytes::from(vec![fill; SIZE]))
                .await
                .expect("put");
        }
        assert!(reader.join().expect("reader") > 0);
    }
}

/// An in-memory store for unit tests, which can be made to fail.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct MemoryStore {
        objects: Mutex<BTreeMap<String, (Bytes, Retention)>>,
        /// Every successful put, in order, with what was stored.
        puts: Mutex<Vec<(String, Bytes)>>,
        fail_next: AtomicU32,
        down: AtomicBool,
    }

    impl MemoryStore {
        /// The next `n` operations fail as if the store were unreachable.
        pub(crate) fn fail_next(&self, n: u32) {
            self.fail_next.store(n, Ordering::SeqCst);
        }

        /// Every operation fails while down.
        pub(crate) fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
        }

        pub(crate) fn keys(&self) -> Vec<String> {
            self.objects.lock().expect("lock").keys().cloned().collect()
        }

        pub(crate) fn get(&self, key: &str) -> Option<(Bytes, Retention)> {
            self.objects.lock().expect("lock").get(key).cloned()
        }

        pub(crate) fn text(&self, key: &str) -> Option<String> {
            self.get(key)
                .map(|(body, _)| String::from_utf8_lossy(&body).into_owned())
        }

        /// The keys of every successful put, in order.
        pub(crate) fn puts(&self) -> Vec<String> {
            self.versions().into_iter().map(|(k, _)| k).collect()
        }

        /// Every successful put with what was stored, in order.
        pub(crate) fn versions(&self) -> Vec<(String, Bytes)> {
            self.puts.lock().expect("lock").clone()
        }

        fn check(&self, key: &str) -> Result<(), StoreError> {
            validate_key(key)?;
            let failing = self.down.load(Ordering::SeqCst)
                || self
                    .fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if failing {
                return Err(StoreError::Unavailable {
                    key: key.to_owned(),
                    code: None,
                    message: "connection refused".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ObjectStore for MemoryStore {
        async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
            self.put_with(key, body, Retention::Kept).await
        }

        async fn put_with(
            &self,
            key: &str,
            body: Bytes,
            retention: Retention,
        ) -> Result<(), StoreError> {
            self.check(key)?;
            self.objects
                .lock()
                .expect("lock")
                .insert(key.to_owned(), (body.clone(), retention));
            self.puts.lock().expect("lock").push((key.to_owned(), body));
            Ok(())
        }

        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.check(key)?;
            self.objects.lock().expect("lock").remove(key);
            Ok(())
        }
    }
}

//! Checkpoints of the embedded log: files in `<data dir>/checkpoints/`, each written to a
//! temporary name, flushed to disk, renamed into place and the directory flushed, so a crash at
//! any moment leaves either the whole file or none (a left-over temporary file is removed when
//! the store is opened).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::store::{stored, CheckpointStore, Stored, StoreError, MAX_CHECKPOINT_BYTES};
use crate::log::BoxFuture;

/// Suffix of a checkpoint file; its stem is the checkpoint's name.
const SUFFIX: &str = ".ckpt";
/// Suffix of a checkpoint being written.
const PARTIAL: &str = ".partial";

pub struct DirStore {
    dir: Arc<PathBuf>,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl DirStore {
    /// The store under `data_dir`: creates `checkpoints/` and removes what a crash left half
    /// written.
    pub fn open(data_dir: &Path) -> Result<DirStore, StoreError> {
        let dir = data_dir.join("checkpoints");
        fs::create_dir_all(&dir).map_err(io)?;
        for entry in fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.to_string_lossy().ends_with(PARTIAL) {
                tracing::info!(file = %path.display(), "removing a checkpoint left half written");
                fs::remove_file(&path).map_err(io)?;
            }
        }
        Ok(DirStore { dir: Arc::new(dir) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}{SUFFIX}"))
    }

    /// Runs blocking file work off the async workers.
    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let dir = self.dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&dir))
                .await
                .map_err(|e| StoreError::Io(e.to_string()))?
        })
    }
}

fn list(dir: &Path) -> Result<Vec<Stored>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(SUFFIX)) else {
            continue;
        };
        let size = entry.metadata().map_err(io)?.len();
        found.extend(stored(name, size));
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.seq));
    Ok(found)
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, StoreError> {
    let file = fs::File::open(DirStore::path(dir, name)).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_CHECKPOINT_BYTES {
        return Err(StoreError::TooLarge { size });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Err(StoreError::TooLarge {
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let partial = dir.join(format!("{name}{PARTIAL}"));
    let mut file = fs::File::create(&partial).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&partial, DirStore::path(dir, name)).map_err(io)?;
    // The rename is durable once the directory is.
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

impl CheckpointStore for DirStore {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        self.blocking(list)
    }

    fn read(&self, name: &str) -> BoxFuture<'_, Result<Vec<u8>, StoreError>> {
        let name = name.to_owned();
        self.blocking(move |dir| read(dir, &name))
    }

    fn write(&self, name: &str, bytes: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
            let size = bytes.len() as u64;
            return Box::pin(async move { Err(StoreError::TooLarge { size }) });
        }
        let name = name.to_owned();
        self.blocking(move |dir| write(dir, &name, &bytes))
    }

    fn remove(&self, name: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let name = name.to_owned();
        self.blocking(move |dir| fs::remove_file(DirStore::path(dir, &name)).map_err(io))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_list_newest_first_and_half_written_files_go_on_open() {
        let data = tempfile::tempdir().unwrap();
        let store = DirStore::open(data.path()).unwrap();
        let (seven, twelve) = ("checkpoint-00000000000000000007-0000abcd", "checkpoint-00000000000000000012-0000abcd");
        store.write(seven, Bytes::from_static(b"seven")).await.unwrap();
        store.write(twelve, Bytes::from_static(b"twelve")).await.unwrap();
        store.write(seven, Bytes::from_static(b"seven")).await.unwrap();
        let half = format!("checkpoint-00000000000000000099-0000abcd{SUFFIX}{PARTIAL}");
        fs::write(store.dir().join(half), b"x").unwrap();
        fs::write(store.dir().join("notes.txt"), b"not a checkpoint").unwrap();
        let listed = store.list().await.unwrap();
        assert_eq!(
            listed.iter().map(|s| (s.seq, s.size)).collect::<Vec<_>>(),
            vec![(12, 6), (7, 5)]
        );
        assert_eq!(listed[0].log_tag, "0000abcd");
        assert_eq!(store.read(&listed[0].name).await.unwrap(), b"twelve");
        store.remove(&listed[1].name).await.unwrap();
        assert_eq!(store.list().await.unwrap().len(), 1);

        let reopened = DirStore::open(data.path()).unwrap();
        let left: Vec<_> = fs::read_dir(reopened.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!left.iter().any(|f| f.ends_with(PARTIAL)), "{left:?}");
    }
}

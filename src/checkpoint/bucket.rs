//! Checkpoints of the JetStream log: objects in the JetStream Object Store bucket
//! `CELLOS_CHECKPOINTS`, created like the event stream (file storage, the stream's replicas), so
//! every replica of the server, a new one included, boots from the newest checkpoint any of them
//! wrote.
//!
//! An object becomes visible only when its metadata is written, after all its chunks, and a read
//! checks the SHA-256 digest the metadata records: a reader sees a whole checkpoint or none. Two
//! servers that checkpoint the same log position write the same name with the same bytes; the
//! later put replaces the earlier one whole.

use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::StorageType;
use async_nats::jetstream::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use super::store::{stored, CheckpointStore, Stored, StoreError, MAX_CHECKPOINT_BYTES};
use crate::log::jetstream::StreamSettings;
use crate::log::BoxFuture;

pub const BUCKET: &str = "CELLOS_CHECKPOINTS";
/// Chunk size of stored objects: well under NATS's default 1 MiB message limit.
const CHUNK_BYTES: usize = 512 * 1024;

pub struct BucketStore {
    js: Context,
    settings: StreamSettings,
    bucket: Mutex<Option<ObjectStore>>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

impl BucketStore {
    /// The bucket on `js`, created (when missing) with the event stream's replicas and
    /// placement.
    pub fn new(js: Context, settings: StreamSettings) -> BucketStore {
        BucketStore {
            js,
            settings,
            bucket: Mutex::new(None),
        }
    }

    /// The bucket, looked up (or created) on first use and after an error.
    async fn bucket(&self) -> Result<ObjectStore, StoreError> {
        let mut cached = self.bucket.lock().await;
        if let Some(bucket) = cached.as_ref() {
            return Ok(bucket.clone());
        }
        let bucket = match self.js.get_object_store(BUCKET).await {
            Ok(bucket) => bucket,
            Err(lookup) => {
                let config = object_store::Config {
                    bucket: BUCKET.into(),
                    description: Some("cellos-server projection checkpoints".into()),
                    storage: StorageType::File,
                    num_replicas: self.settings.replicas,
                    placement: self.settings.placement.clone(),
                    ..Default::default()
                };
                let created = self.js.create_object_store(config).await;
                created.map_err(|create| {
                    unavailable(
                        "checkpoint bucket",
                        format!("lookup: {lookup}; creating it: {create}"),
                    )
                })?
            }
        };
        *cached = Some(bucket.clone());
        Ok(bucket)
    }

    /// Forgets the bucket handle after an error, so the next use looks it up again (it may have
    /// been deleted and created anew).
    async fn reset(&self) {
        *self.bucket.lock().await = None;
    }

    async fn attempt<T, F>(&self, op: impl FnOnce(ObjectStore) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let bucket = self.bucket().await?;
        let result = op(bucket).await;
        if result.is_err() {
            self.reset().await;
        }
        result
    }
}

impl CheckpointStore for BucketStore {
    fn describe(&self) -> String {
        format!("JetStream object store {BUCKET}")
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        Box::pin(self.attempt(|bucket| async move {
            let mut objects = bucket
                .list()
                .await
                .map_err(|e| unavailable("listing checkpoints", e))?;
            let mut found = Vec::new();
            while let Some(info) = objects.next().await {
                let info = info.map_err(|e| unavailable("listing checkpoints", e))?;
                if info.deleted {
                    continue;
                }
                found.extend(stored(&info.name, info.size as u64));
            }
            found.sort_by_key(|s| std::cmp::Reverse(s.seq));
            Ok(found)
        }))
    }

    fn read(&self, name: &str) -> BoxFuture<'_, Result<Vec<u8>, StoreError>> {
        let name = name.to_owned();
        Box::pin(self.attempt(|bucket| async move {
            let mut object = bucket
                .get(&name)
                .await
                .map_err(|e| unavailable("reading a checkpoint", e))?;
            let size = object.info().size as u64;
            if size > MAX_CHECKPOINT_BYTES {
                return Err(StoreError::TooLarge { size });
            }
            let mut bytes = Vec::with_capacity(size as usize);
            // The object checks its digest when it reaches its end.
            (&mut object)
                .take(MAX_CHECKPOINT_BYTES + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| unavailable("reading a checkpoint", e))?;
            Ok(bytes)
        }))
    }

    fn write(&self, name: &str, bytes: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        let name = name.to_owned();
        Box::pin(async move {
            let size = bytes.len() as u64;
            if size > MAX_CHECKPOINT_BYTES {
                return Err(StoreError::TooLarge { size });
            }
            self.attempt(|bucket| async move {
                let meta = ObjectMetadata {
                    name,
                    chunk_size: Some(CHUNK_BYTES),
                    ..Default::default()
                };
                bucket
                    .put(meta, &mut bytes.as_ref())
                    .await
                    .map_err(|e| unavailable("writing a checkpoint", e))?;
                Ok(())
            })
            .await
        })
    }

    fn remove(&self, name: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let name = name.to_owned();
        Box::pin(self.attempt(|bucket| async move {
            bucket
                .delete(&name)
                .await
                .map_err(|e| unavailable("removing a checkpoint", e))
        }))
    }
}

//! The grid's object store (file:// by default; s3://, gs://, az://, memory:// by URL), with the
//! few ranged reads the broker needs. Clients and workers never see storage credentials: bytes
//! reach them over NATS through the broker.

use std::sync::Arc;

use object_store::{path::Path, ObjectStore, ObjectStoreExt};
use url::Url;

use super::inspect::{self, DataSummary};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store URL {0}: {1}")]
    Url(String, String),
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object store: {0}")]
    Other(String),
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => StoreError::NotFound(path),
            other => StoreError::Other(other.to_string()),
        }
    }
}

/// A cheap-to-clone handle on the store, rooted at the URL's path.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: Path,
}

impl Store {
    /// Opens `file:///abs/dir` (created if missing), `memory://`, or a cloud URL.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        // A bare absolute path means a directory, as a user would expect.
        let url = &if url.starts_with('/') {
            format!("file://{url}")
        } else {
            url.to_string()
        };
        let parsed = Url::parse(url)
            .map_err(|e| StoreError::Url(url.into(), format!("{e} (use file:///abs/dir or memory://)")))?;
        if parsed.scheme() == "file" {
            let dir = parsed
                .to_file_path()
                .map_err(|_| StoreError::Url(url.into(), "not an absolute path".into()))?;
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::Url(url.into(), e.to_string()))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
            return Ok(Self {
                inner: Arc::new(fs),
                root: Path::default(),
            });
        }
        let (store, root) = object_store::parse_url(&parsed).map_err(|e| StoreError::Url(url.into(), e.to_string()))?;
        Ok(Self {
            inner: Arc::from(store),
            root,
        })
    }

    pub fn path(&self, key: &str) -> Path {
        if self.root.as_ref().is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.root))
        }
    }

    pub fn raw(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    pub async fn size(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.inner.head(&self.path(key)).await?.size)
    }

    pub async fn read(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .get_range(&self.path(key), offset..offset + len)
            .await?
            .to_vec())
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        Ok(self.inner.rename(&self.path(from), &self.path(to)).await?)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        Ok(self.inner.delete(&self.path(key)).await?)
    }

    /// Whether the stored object at `key` looks like a TorchScript archive.
    pub async fn inspect_model(&self, key: &str) -> Result<Result<(), String>, StoreError> {
        let size = self.size(key).await?;
        let head = self.read(key, 0, size.min(4)).await?;
        let tail_len = size.min(1 << 20);
        let tail = self.read(key, size - tail_len, tail_len).await?;
        Ok(inspect::check_model(&head, &tail))
    }

    /// The training data's header, checked.
    pub async fn inspect_data(&self, key: &str) -> Result<Result<DataSummary, String>, StoreError> {
        let size = self.size(key).await?;
        let prefix = self.read(key, 0, size.min(8)).await?;
        let n = match inspect::header_len(&prefix) {
            Ok(n) if 8 + n <= size => n,
            Ok(_) => {
                return Ok(Err(
                    "data is not safetensors: header runs past the end of the file".into()
                ))
            }
            Err(e) => return Ok(Err(e)),
        };
        let header = self.read(key, 8, n).await?;
        Ok(inspect::check_data(&header, size, n))
    }
}

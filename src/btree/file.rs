//! A page store over one file with positional std I/O (pread, pwrite,
//! fdatasync).
//!
//! Owns: the file handle and its length in pages. Never touches: caching
//! (every read goes to the kernel), the tree, or other files. This is the
//! blocking store for tools, tests and start-up; on a reactor the io_uring
//! O_DIRECT store takes its place behind the same trait.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::btree::error::StoreError;
use crate::btree::page::{Page, PageId, PAGE_BYTES};
use crate::btree::store::PageStore;

/// A tree file read and written with pread/pwrite.
pub struct FileStore {
    file: File,
    path: PathBuf,
    page_count: u64,
}

impl FileStore {
    /// Opens `path` for reading and writing, creating an empty file if there
    /// is none. A trailing partial page (never written by this format) is
    /// ignored.
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let io = |source| StoreError::Io { op: "open", page: None, source };
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        Ok(FileStore { file, path: path.to_path_buf(), page_count: bytes / PAGE_BYTES as u64 })
    }

    /// The file's path (for error messages: the tree reports page ids).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(op: &'static str, page: Option<PageId>) -> impl FnOnce(io::Error) -> StoreError {
        move |source| StoreError::Io { op, page, source }
    }
}

impl PageStore for FileStore {
    fn read(&self, id: PageId) -> Result<Arc<Page>, StoreError> {
        if id.0 >= self.page_count {
            return Err(StoreError::OutOfRange { page: id, page_count: self.page_count });
        }
        let mut page = Page::zeroed();
        self.file.read_exact_at(page.bytes_mut(), id.byte_offset()).map_err(Self::io("read", Some(id)))?;
        page.verify(id).map_err(|corruption| StoreError::Corrupt { page: id, corruption })?;
        Ok(Arc::new(page))
    }

    fn write(&mut self, id: PageId, page: &Arc<Page>) -> Result<(), StoreError> {
        self.file.write_all_at(page.bytes(), id.byte_offset()).map_err(Self::io("write", Some(id)))?;
        self.page_count = self.page_count.max(id.0 + 1);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(Self::io("sync", None))
    }

    fn page_count(&self) -> u64 {
        self.page_count
    }

    fn truncate(&mut self, page_count: u64) -> Result<(), StoreError> {
        if page_count >= self.page_count {
            return Ok(());
        }
        let bytes = page_count.saturating_mul(PAGE_BYTES as u64);
        self.file.set_len(bytes).map_err(Self::io("truncate", Some(PageId(page_count))))?;
        self.page_count = page_count;
        Ok(())
    }
}

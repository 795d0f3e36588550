//! Read-only file mapping (memmap2), kept beside the ggml wrappers because
//! mapping a file is inherently `unsafe` (the file could change under us).

use std::fs::File;
use std::path::Path;

/// A read-only memory map of a whole file.
pub struct MappedFile {
    map: memmap2::Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        // Model files are treated as immutable while mapped; a concurrent
        // writer would be a user error we cannot guard against.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Self { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Maps a range's pages into our address space now (one read per page),
    /// so later passes over it do not stop on page faults.
    pub fn prefault(&self, offset: usize, len: usize) {
        let end = (offset + len).min(self.map.len());
        let mut sum = 0u8;
        for at in (offset..end).step_by(4096) {
            sum = sum.wrapping_add(self.map[at]);
        }
        std::hint::black_box(sum);
    }

    /// Tells the kernel that a range will not be read again soon, so its pages
    /// can leave our resident set (keeps peak RSS low when streaming a file).
    pub fn release(&self, offset: usize, len: usize) {
        let page = 4096;
        let start = offset / page * page;
        let end = (offset + len).min(self.map.len());
        if end > start {
            // DONTNEED on a read-only file mapping only drops clean pages, which
            // are re-read from the file if touched again: no data can be lost.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

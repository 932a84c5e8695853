//! Writable shared mappings of the mmap-able array maps (the indexes, the narrow bitmap, the
//! settings map), written a `u64` word at a time with atomic stores while the program reads
//! them.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;

use super::{FilterError, map_err};

/// A writable shared mapping of an mmap-able array map of `u64`s.
pub(super) struct IndexMmap {
    ptr: *mut AtomicU64,
    len: usize,
}

impl IndexMmap {
    pub(super) fn map(data: &MapData, name: &'static str) -> Result<Self, FilterError> {
        let info = data.info().map_err(|e| map_err(name, "reading info", e))?;
        // Every value is a whole number of u64 words, so the value area is exactly this many.
        let len =
            info.max_entries() as usize * info.value_size() as usize / std::mem::size_of::<u64>();
        let bytes = len * std::mem::size_of::<u64>();
        // SAFETY: a fresh shared mapping of the map's fd, sized to the map's value area.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(map_err(name, "mmap", io::Error::last_os_error()));
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    pub(super) fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds `len` aligned u64s for as long as self lives; the kernel
        // reads them concurrently, hence atomics.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for IndexMmap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len * std::mem::size_of::<u64>());
        }
    }
}

/// Phase 1 for an index: every word becomes `old | new`.
pub(super) fn update_index(
    data: &MapData,
    name: &'static str,
    new: &[u64],
) -> Result<usize, FilterError> {
    Ok(or_words(IndexMmap::map(data, name)?.words(), new))
}

/// Phase 2 for an index: every word becomes exactly `new`.
pub(super) fn prune_index(
    data: &MapData,
    name: &'static str,
    new: &[u64],
) -> Result<usize, FilterError> {
    Ok(set_words(IndexMmap::map(data, name)?.words(), new))
}

/// The cells' values now.
pub(super) fn load_words(cells: &[AtomicU64]) -> Vec<u64> {
    cells.iter().map(|w| w.load(Ordering::Acquire)).collect()
}

/// Makes every cell `old | new`, each with one atomic store; returns the cells written.
pub(super) fn or_words(cells: &[AtomicU64], new: &[u64]) -> usize {
    let mut written = 0;
    for (cell, &want) in cells.iter().zip(new) {
        let cur = cell.load(Ordering::Relaxed);
        if cur | want != cur {
            cell.store(cur | want, Ordering::Release);
            written += 1;
        }
    }
    written
}

/// Makes every cell exactly `new`, each with one atomic store; returns the cells written.
pub(super) fn set_words(cells: &[AtomicU64], new: &[u64]) -> usize {
    let mut written = 0;
    for (cell, &want) in cells.iter().zip(new) {
        if cell.load(Ordering::Relaxed) != want {
            cell.store(want, Ordering::Release);
            written += 1;
        }
    }
    written
}

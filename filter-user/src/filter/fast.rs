//! The program's fast map: one array entry holding the words of [`filter_common::fast`] (a copy
//! of the settings and ports, and each family's coarse bitmap and summary), which the program
//! reads at a fixed address instead of looking maps up.
//!
//! The loader creates it from the object's [`map_names::FAST_SECTION`], zero-filled and not
//! mmap-able, on every load; a pinned one cannot be handed to a new program without being
//! zeroed. So each loaded program gets its own, filled before the program can run and then
//! pinned as [`map_names::FAST`], where a later run finds it when it re-adopts that program.
//!
//! It is written whole, with one `BPF_MAP_UPDATE_ELEM`, and the kernel's copy does not respect
//! word boundaries: the program may read a word mixing old and new bytes. That is safe because
//! every write is one phase of a two-phase update. Phase 1 only sets bits, phase 2 only clears
//! bits the new state lacks; either way any mix of old and new bytes holds every bit both hold,
//! so a prefix or port kept across the update is never missing. The flags live in one byte.

use std::{
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use aya::{maps::MapData, programs::Xdp};
use filter_common::{Policy, fast, map_names};

use super::{FilterError, boxed, map_err, pinned};

/// `BPF_MAP_LOOKUP_ELEM` and `BPF_MAP_UPDATE_ELEM` from linux/bpf.h.
#[cfg(feature = "bench")]
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// The element-operation part of `union bpf_attr`.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The fast map of one loaded program.
pub(super) struct FastMap {
    data: MapData,
    /// Whether the map is known to hold exactly the value derived from the filter's record of
    /// its state (the tries and the settings map), so that an update can tell which of its
    /// writes would change nothing. Cleared while unknown: after re-adoption, during an
    /// update, after the benchmark hook. Deriving the value costs less than reading 2 MiB
    /// back, and keeping a copy would cost 2 MiB of the daemon's memory.
    pub(super) trusted: bool,
}

// `with_policy` and `phase_one` rely on the policy coming first.
const _: () = assert!(fast::POLICY == 0);

impl FastMap {
    /// The map the loader created for the program it just loaded (still all zeros).
    pub(super) fn loaded(data: MapData) -> Result<Self, FilterError> {
        // The loader's handle keeps a copy of the section's initial bytes (all 2 MiB of zeros)
        // for as long as it lives; a handle made from a duplicate of its fd does not.
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| map_err(map_names::FAST, "duplicating the fd", e))?;
        drop(data);
        let data = MapData::from_fd(fd).map_err(|e| map_err(map_names::FAST, "reopening", e))?;
        let fast = Self {
            data,
            // All zeros, which is what an empty filter derives to only if the settings are
            // zero too: `install_program` writes it before trusting it.
            trusted: false,
        };
        fast.check_size()?;
        Ok(fast)
    }

    /// The pinned fast map, if there is one and it is the one `prog` reads; `None` otherwise
    /// (then `prog` cannot be re-adopted and must be replaced).
    pub(super) fn pinned_for(path: &Path, prog: &Xdp) -> Result<Option<Self>, FilterError> {
        if !path.exists() {
            return Ok(None);
        }
        let data =
            pinned::open_map(path).map_err(|e| map_err(map_names::FAST, "opening the pin", e))?;
        let id = data
            .info()
            .map_err(|e| map_err(map_names::FAST, "reading info", e))?
            .id();
        let uses = prog
            .info()
            .and_then(|info| info.map_ids())
            .map_err(|e| map_err(map_names::FAST, "listing the pinned program's maps", e))?;
        if !uses.is_some_and(|ids| ids.contains(&id)) {
            return Ok(None);
        }
        let fast = Self {
            data,
            trusted: false,
        };
        fast.check_size()?;
        Ok(Some(fast))
    }

    fn check_size(&self) -> Result<(), FilterError> {
        let info = self
            .data
            .info()
            .map_err(|e| map_err(map_names::FAST, "reading info", e))?;
        let want = fast::WORDS * size_of::<u64>();
        if info.max_entries() != 1 || info.value_size() as usize != want {
            return Err(map_err(
                map_names::FAST,
                "checking the layout",
                io::Error::other(format!(
                    "{} entries of {} bytes, not 1 of {want}",
                    info.max_entries(),
                    info.value_size()
                )),
            ));
        }
        Ok(())
    }

    /// Replaces the map's value with `words` ([`fast::WORDS`] of them).
    pub(super) fn replace(&mut self, words: &[u64]) -> Result<(), FilterError> {
        assert_eq!(words.len(), fast::WORDS, "a whole fast-map value");
        // The kernel only reads the value for an update.
        elem_op(&self.data, BPF_MAP_UPDATE_ELEM, words.as_ptr().cast_mut())
            .map_err(|e| map_err(map_names::FAST, "writing", e))
    }

    /// Phase 1 of an update from `now` (what the map holds, if `trusted`) towards `new`:
    /// turns `now` into their union (see [`phase_one`]) and writes it unless trusted and
    /// unchanged. Returns the words that changed.
    pub(super) fn add(
        &mut self,
        now: &mut [u64],
        new: &[u64],
        trusted: bool,
    ) -> Result<usize, FilterError> {
        let changed = phase_one(now, new);
        if changed > 0 || !trusted {
            self.replace(now)?;
        }
        Ok(changed)
    }

    /// Phase 2: from `now` (what phase 1 left) to exactly `new`. Returns the words that changed.
    pub(super) fn prune(&mut self, now: &[u64], new: &[u64]) -> Result<usize, FilterError> {
        let changed = now.iter().zip(new).filter(|(a, b)| a != b).count();
        if changed > 0 {
            self.replace(new)?;
        }
        Ok(changed)
    }

    /// Pins the map at `path`, replacing whatever was pinned there in one rename.
    pub(super) fn pin(&self, path: &Path) -> Result<(), FilterError> {
        let pin_err = |op, e: io::Error| FilterError::Pin {
            op,
            path: path.to_path_buf(),
            source: boxed(e),
        };
        // bpffs refuses names with a dot.
        let mut staging = path.as_os_str().to_owned();
        staging.push("_STAGING");
        let staging = std::path::PathBuf::from(staging);
        match fs::remove_file(&staging) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(pin_err("removing a stale staging pin of", e));
            }
            _ => {}
        }
        self.data.pin(&staging).map_err(|e| FilterError::Pin {
            op: "pinning the fast map beside",
            path: path.to_path_buf(),
            source: boxed(e),
        })?;
        fs::rename(&staging, path).map_err(|e| pin_err("moving the fast map's pin to", e))
    }
}

/// The whole value of the fast map pinned at `path`: a diagnostic for tests, which cannot read
/// it with aya's typed `Array::get` (that would put its 2 MiB on the stack).
#[cfg(feature = "bench")]
pub fn read_pinned(path: &Path) -> Result<Vec<u64>, FilterError> {
    let data =
        pinned::open_map(path).map_err(|e| map_err(map_names::FAST, "opening the pin", e))?;
    let fast = FastMap {
        data,
        trusted: false,
    };
    fast.check_size()?;
    let mut words = vec![0u64; fast::WORDS];
    elem_op(&fast.data, BPF_MAP_LOOKUP_ELEM, words.as_mut_ptr())
        .map_err(|e| map_err(map_names::FAST, "reading", e))?;
    Ok(words)
}

/// `cmd` on the single element of `map`, whose whole value `value` points to: aya's typed calls
/// would need the 2 MiB value as one Rust value, on the stack.
fn elem_op(map: &MapData, cmd: libc::c_long, value: *mut u64) -> io::Result<()> {
    let key = 0u32;
    let attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(&key) as u64,
        value: value as u64,
        // BPF_ANY for an update; ignored by a lookup.
        flags: 0,
    };
    // SAFETY: `attr` names a live map fd, a 4-byte key and a buffer of the map's whole value
    // (every caller checked the map's size), all valid for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(&attr),
            size_of::<ElemAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A whole fast-map value: `bitmaps` (a value whose policy region is ignored) with `policy`
/// (the [`Policy`] words) in its policy region.
pub(super) fn with_policy(mut bitmaps: Vec<u64>, policy: &[u64]) -> Vec<u64> {
    bitmaps[..Policy::WORDS].copy_from_slice(policy);
    bitmaps
}

/// Makes `now` the value phase 1 of an update writes: every bit of `now` and of `new`, but
/// `new`'s settings word (the flags are not a set to merge). Returns the words that changed.
pub(super) fn phase_one(now: &mut [u64], new: &[u64]) -> usize {
    let mut changed = usize::from(now[0] != new[0]);
    now[0] = new[0];
    for (word, &want) in now.iter_mut().zip(new).skip(1) {
        changed += usize::from(*word | want != *word);
        *word |= want;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value with `settings` and one port word, and one word set in each bitmap region.
    fn value(settings: u64, port: u64, bits: u64) -> Vec<u64> {
        let mut policy = vec![0; Policy::WORDS];
        policy[0] = settings;
        policy[1 + 443 / 64] = port;
        let mut bitmaps = vec![0; fast::WORDS];
        for at in [
            fast::V4_COARSE,
            fast::V4_SUMMARY,
            fast::V6_COARSE,
            fast::V6_SUMMARY,
        ] {
            bitmaps[at + 3] = bits;
        }
        with_policy(bitmaps, &policy)
    }

    #[test]
    fn phase_one_keeps_the_old_bits_and_takes_the_new_settings() {
        let old = value(1, 0b01, 0b0011);
        let new = value(0, 0b10, 0b0110);

        let mut union = old.clone();
        let changed = phase_one(&mut union, &new);

        assert_eq!(
            union[fast::POLICY],
            0,
            "settings are the new ones, not ORed"
        );
        assert_eq!(union[fast::POLICY + 1 + 443 / 64], 0b11, "ports are ORed");
        for at in [
            fast::V4_COARSE,
            fast::V4_SUMMARY,
            fast::V6_COARSE,
            fast::V6_SUMMARY,
        ] {
            assert_eq!(union[at + 3], 0b0111, "bitmap words are ORed at {at}");
        }
        let differ = union.iter().zip(&old).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ,
            1 + 1 + 4,
            "only the settings, one port word, four bitmap words"
        );
        assert_eq!(changed, differ, "the count is of the words that changed");
    }

    #[test]
    fn the_policy_goes_first_and_the_bitmaps_stay() {
        let mut bitmaps = vec![0; fast::WORDS];
        bitmaps[fast::V4_COARSE] = 7;
        bitmaps[0] = 9;
        let policy: Vec<u64> = (0..Policy::WORDS as u64).collect();

        let value = with_policy(bitmaps, &policy);

        assert_eq!(&value[..Policy::WORDS], &policy[..]);
        assert_eq!(value[fast::V4_COARSE], 7);
        assert_eq!(value.len(), fast::WORDS);
    }
}

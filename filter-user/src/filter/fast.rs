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
use filter_common::{Config, fast, map_names};

use super::{FilterError, Phase, boxed, map_err};

/// `BPF_MAP_LOOKUP_ELEM` and `BPF_MAP_UPDATE_ELEM` from linux/bpf.h.
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
}

impl FastMap {
    /// The map the loader created for the program it just loaded (still all zeros).
    pub(super) fn loaded(data: MapData) -> Result<Self, FilterError> {
        let fast = Self { data };
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
            MapData::from_pin(path).map_err(|e| map_err(map_names::FAST, "opening the pin", e))?;
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
        let fast = Self { data };
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

    /// The map's words as the kernel holds them now.
    pub(super) fn read(&self) -> Result<Vec<u64>, FilterError> {
        let mut words = vec![0u64; fast::WORDS];
        self.elem_op(BPF_MAP_LOOKUP_ELEM, words.as_mut_ptr())
            .map_err(|e| map_err(map_names::FAST, "reading", e))?;
        Ok(words)
    }

    /// Replaces the map's words with `words` ([`fast::WORDS`] of them).
    pub(super) fn write(&self, words: &[u64]) -> Result<(), FilterError> {
        assert_eq!(words.len(), fast::WORDS, "a whole fast-map value");
        // The kernel only reads the value for an update.
        self.elem_op(BPF_MAP_UPDATE_ELEM, words.as_ptr().cast_mut())
            .map_err(|e| map_err(map_names::FAST, "writing", e))
    }

    /// One phase of an update towards `config` (the [`Config`] words) and `bitmaps` (a whole
    /// value whose config region is ignored): phase 1 ORs the new bits in, phase 2 makes every
    /// word exactly the new one. The settings word is set in phase 1 as it is. Returns the
    /// words that changed; writes nothing if none did.
    pub(super) fn update(
        &self,
        config: &[u64],
        bitmaps: &[u64],
        phase: Phase,
    ) -> Result<usize, FilterError> {
        let mut words = self.read()?;
        let written = merge(&mut words, config, bitmaps, phase);
        if written > 0 {
            self.write(&words)?;
        }
        Ok(written)
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

    fn elem_op(&self, cmd: libc::c_long, value: *mut u64) -> io::Result<()> {
        let key = 0u32;
        let attr = ElemAttr {
            map_fd: self.data.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: std::ptr::from_ref(&key) as u64,
            value: value as u64,
            // BPF_ANY for an update; ignored by a lookup.
            flags: 0,
        };
        // SAFETY: `attr` names a live map fd, a 4-byte key and a buffer of the map's whole
        // value (checked in `check_size`), all valid for the duration of the call. aya has no
        // call that reads or writes a value this large without putting it on the stack.
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
}

/// One phase of an update of fast-map `words` towards `config` (the [`Config`] words) and
/// `bitmaps` (a whole value whose config region is ignored): phase 1 ORs every word but the
/// settings word, which it sets; phase 2 sets every word. Returns the words that changed.
fn merge(words: &mut [u64], config: &[u64], bitmaps: &[u64], phase: Phase) -> usize {
    let mut written = 0;
    for (at, word) in words.iter_mut().enumerate() {
        let want = if (fast::CONFIG..fast::CONFIG + Config::WORDS).contains(&at) {
            config[at - fast::CONFIG]
        } else {
            bitmaps[at]
        };
        let new = match phase {
            Phase::Add if at != fast::CONFIG => *word | want,
            _ => want,
        };
        if new != *word {
            *word = new;
            written += 1;
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value with `settings` and one port word, and one word set in each bitmap region.
    fn value(settings: u64, port: u64, bits: u64) -> (Vec<u64>, Vec<u64>) {
        let mut config = vec![0; Config::WORDS];
        config[0] = settings;
        config[1 + 443 / 64] = port;
        let mut bitmaps = vec![0; fast::WORDS];
        for at in [
            fast::V4_COARSE,
            fast::V4_SUMMARY,
            fast::V6_COARSE,
            fast::V6_SUMMARY,
        ] {
            bitmaps[at + 3] = bits;
        }
        (config, bitmaps)
    }

    #[test]
    fn phase_one_keeps_the_old_bits_and_sets_the_new_settings() {
        let (old_config, old_bitmaps) = value(1, 0b01, 0b0011);
        let mut words = vec![0; fast::WORDS];
        merge(&mut words, &old_config, &old_bitmaps, Phase::Prune);
        let (config, bitmaps) = value(0, 0b10, 0b0110);

        let written = merge(&mut words, &config, &bitmaps, Phase::Add);

        assert_eq!(words[fast::CONFIG], 0, "settings are set, not ORed");
        assert_eq!(words[fast::CONFIG + 1 + 443 / 64], 0b11, "ports are ORed");
        for at in [
            fast::V4_COARSE,
            fast::V4_SUMMARY,
            fast::V6_COARSE,
            fast::V6_SUMMARY,
        ] {
            assert_eq!(words[at + 3], 0b0111, "bitmap words are ORed at {at}");
        }
        assert_eq!(written, 1 + 1 + 4, "only the words that changed count");
    }

    #[test]
    fn phase_two_leaves_exactly_the_new_state() {
        let (old_config, old_bitmaps) = value(1, 0b01, 0b0011);
        let mut words = vec![0; fast::WORDS];
        merge(&mut words, &old_config, &old_bitmaps, Phase::Prune);
        let (config, bitmaps) = value(1, 0b10, 0b0110);
        merge(&mut words, &config, &bitmaps, Phase::Add);

        merge(&mut words, &config, &bitmaps, Phase::Prune);

        let mut want = bitmaps.clone();
        want[fast::CONFIG..fast::CONFIG + Config::WORDS].copy_from_slice(&config);
        assert_eq!(words, want);
        assert_eq!(
            merge(&mut words, &config, &bitmaps, Phase::Prune),
            0,
            "nothing left to do"
        );
    }
}

//! Making sure the pin path lies on a bpffs, mounting one where needed.

use std::{ffi::CString, fs, io, path::Path};

use super::{FilterError, boxed};

/// `BPF_FS_MAGIC` from linux/magic.h: the statfs type of a bpffs mount.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The canonical bpffs mount point.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Makes sure `path` will be on a bpffs: if its closest existing ancestor is not on one, mounts
/// bpffs at /sys/fs/bpf when that is the ancestor (the usual, empty mount point), otherwise at
/// `path` itself. Serialised and re-checked so that concurrent callers never stack two mounts
/// (a second mount would hide the first one's pins).
pub fn ensure_bpffs(path: &Path) -> Result<(), FilterError> {
    static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = MOUNTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    if is_bpffs(probe) {
        return Ok(());
    }
    if in_private_mount_namespace() {
        return Err(FilterError::Pin {
            op: "refusing to mount a private bpffs for",
            path: path.to_path_buf(),
            source: "this process runs in its own mount namespace (e.g. under `ip netns exec`), \
                     where pins would vanish with it and the filter with them: run hookwall in \
                     the host's mount namespace (`nsenter --net=/run/netns/NAME hookwall ...`), \
                     or mount bpffs at /sys/fs/bpf first"
                .into(),
        });
    }
    let target = if probe == Path::new(BPFFS_ROOT) {
        probe.to_path_buf()
    } else {
        fs::create_dir_all(path).map_err(|e| FilterError::Pin {
            op: "creating pin path",
            path: path.to_path_buf(),
            source: boxed(e),
        })?;
        path.to_path_buf()
    };
    let c_target =
        CString::new(target.as_os_str().as_encoded_bytes()).map_err(|e| FilterError::Pin {
            op: "mounting bpffs at",
            path: target.clone(),
            source: boxed(e),
        })?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c_target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(FilterError::Pin {
            op: "mounting bpffs at",
            path: target,
            source: boxed(io::Error::last_os_error()),
        });
    }
    tracing::info!(path = %target.display(), "mounted bpffs");
    Ok(())
}

/// Whether this process's mount namespace differs from init's, where a bpffs we mount would
/// not be seen by anyone else and would disappear with us.
fn in_private_mount_namespace() -> bool {
    match (
        fs::read_link("/proc/self/ns/mnt"),
        fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(ours), Ok(init)) => ours != init,
        // Cannot tell (e.g. /proc/1 hidden): do not block a start on a guess.
        _ => false,
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; `c` is NUL-terminated.
    #[allow(
        clippy::useless_conversion,
        reason = "f_type is narrower than i64 on some targets"
    )]
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &raw mut st) == 0 && i64::from(st.f_type) == BPF_FS_MAGIC
    }
}

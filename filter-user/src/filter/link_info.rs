//! The kernel's view of a pinned XDP link: which interface it is attached to now. aya exposes a
//! link's id and program, not its interface, so these two `bpf()` commands are made here.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use aya_obj::generated::{bpf_cmd, bpf_link_info, bpf_link_type};

/// `union bpf_attr` as `BPF_OBJ_GET` reads it.
#[repr(C)]
struct ObjGet {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `union bpf_attr` as `BPF_OBJ_GET_INFO_BY_FD` reads it.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The interface index the XDP link pinned at `path` is attached to now; 0 when the link
/// exists but is detached (its interface was deleted, or `BPF_LINK_DETACH` was called on it).
///
/// # Errors
/// The pin cannot be opened (missing, or not a link), or the link is not an XDP link.
pub(super) fn xdp_link_ifindex(path: &Path) -> io::Result<u32> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut get = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `get` is a valid BPF_OBJ_GET attribute for its size; the path outlives the call.
    let fd = unsafe {
        bpf(
            bpf_cmd::BPF_OBJ_GET,
            (&raw mut get).cast(),
            size_of::<ObjGet>(),
        )
    }?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero bpf_link_info is valid (plain integers and unions of them).
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut by_fd = InfoByFd {
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?,
        info_len: u32::try_from(size_of::<bpf_link_info>()).map_err(io::Error::other)?,
        info: (&raw mut info) as u64,
    };
    // SAFETY: `by_fd` points at `info`, which is as large as `info_len` says and lives past the
    // call.
    unsafe {
        bpf(
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD,
            (&raw mut by_fd).cast(),
            size_of::<InfoByFd>(),
        )
    }?;
    if info.type_ != bpf_link_type::BPF_LINK_TYPE_XDP as u32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an XDP link (link type {})", info.type_),
        ));
    }
    // SAFETY: the kernel filled the union's `xdp` member for an XDP link.
    Ok(unsafe { info.__bindgen_anon_1.xdp.ifindex })
}

/// The `bpf()` system call.
///
/// # Safety
/// `attr` must point to `size` readable and writable bytes laid out as `cmd` expects.
unsafe fn bpf(cmd: bpf_cmd, attr: *mut libc::c_void, size: usize) -> io::Result<i32> {
    // SAFETY: the caller's contract.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_int, attr, size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        i32::try_from(ret).map_err(io::Error::other)
    }
}

/// The index of the interface named `name` in this network namespace, if there is one.
pub(super) fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid C string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

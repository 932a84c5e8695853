//! One set of credentials, applied to every thread of the process.
//!
//! Linux keeps credentials per thread: the user and group ids, the capability sets, the bounding
//! set and no_new_privs. glibc makes `setresuid` reach every thread; `capset` and `prctl` reach
//! only the caller. By the time the daemon drops what only its start needed, the tokio workers,
//! the blocking pool and the store's threads already run with root's full set, and code running
//! on any one of them could use it. So each thread is asked in turn, by a signal, to apply the
//! same [`Creds`] to itself, as glibc does for `setresuid` and libcap's psx for `capset`. A
//! thread started afterwards inherits the credentials of the thread that starts it, which by
//! then has them.
//!
//! [`apply`] runs inside a signal handler: it makes raw system calls on data prepared beforehand,
//! and nothing else (no allocation, no lock).

use std::{
    collections::BTreeSet,
    fmt, fs, io,
    path::Path,
    sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// What every thread ends up with.
pub(super) struct Creds {
    /// The capabilities kept in the effective, permitted and bounding sets (bit N: capability
    /// N); every other one is dropped from all of them, and the inheritable and ambient sets are
    /// emptied.
    pub(super) keep: u64,
    /// Every capability this kernel knows, so that each one not kept leaves the bounding set.
    pub(super) known: u64,
    /// The identity to take; `None` keeps the process's own.
    pub(super) ids: Option<Ids>,
}

/// A user's ids.
pub(super) struct Ids {
    pub(super) uid: libc::uid_t,
    pub(super) gid: libc::gid_t,
    /// Its supplementary groups (its primary one among them), as `initgroups` would set them.
    pub(super) groups: Vec<libc::gid_t>,
}

/// The step of [`apply`] that the kernel refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Failure {
    step: Step,
    /// The capability, for [`Step::Bounding`].
    cap: u8,
    errno: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    Bounding = 1,
    Ambient,
    KeepCaps,
    Groups,
    Gid,
    Uid,
    Capset,
    NoNewPrivs,
}

impl Step {
    const ALL: [Self; 8] = [
        Self::Bounding,
        Self::Ambient,
        Self::KeepCaps,
        Self::Groups,
        Self::Gid,
        Self::Uid,
        Self::Capset,
        Self::NoNewPrivs,
    ];
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.step {
            Step::Bounding => format!(
                "dropping capability {} from the bounding set (PR_CAPBSET_DROP)",
                self.cap
            ),
            Step::Ambient => "clearing the ambient capabilities".to_owned(),
            Step::KeepCaps => "keeping the capabilities across the user switch".to_owned(),
            Step::Groups => "setting the supplementary groups (setgroups)".to_owned(),
            Step::Gid => "switching the group (setresgid)".to_owned(),
            Step::Uid => "switching the user (setresuid)".to_owned(),
            Step::Capset => "setting the capability sets (capset)".to_owned(),
            Step::NoNewPrivs => "setting no_new_privs".to_owned(),
        };
        write!(f, "{what}: {}", io::Error::from_raw_os_error(self.errno))
    }
}

impl Failure {
    /// Packs into one word for the handler's report (0 is success).
    fn encode(self) -> u64 {
        (u64::from(self.step as u8) << 40)
            | (u64::from(self.cap) << 32)
            | u64::from(self.errno.unsigned_abs())
    }

    fn decode(word: u64) -> Option<Self> {
        let step = Step::ALL
            .into_iter()
            .find(|s| u64::from(*s as u8) == word >> 40)?;
        Some(Self {
            step,
            cap: u8::try_from((word >> 32) & 0xff).unwrap_or(u8::MAX),
            errno: i32::try_from(word & 0xffff_ffff).unwrap_or(i32::MAX),
        })
    }
}

/// `_LINUX_CAPABILITY_VERSION_3` (linux/capability.h): 64-bit sets, in two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn errno() -> i32 {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Applies `creds` to the calling thread, in the order the kernel allows: the bounding set
/// while CAP_SETPCAP is still held; the ids while CAP_SETUID and CAP_SETGID are (keeping the
/// permitted set across the switch); then the capability sets themselves; no_new_privs last.
/// A thread that already has them is left as it is, so a thread may be asked twice.
///
/// Async-signal-safe: raw system calls on `creds`, nothing else.
pub(super) fn apply(creds: &Creds) -> Result<(), Failure> {
    let fail = |step, cap| Failure {
        step,
        cap,
        errno: errno(),
    };
    // SAFETY (every block below): system calls with integer arguments or pointers to live,
    // properly sized values.
    for cap in 0..64u8 {
        let bit = 1u64 << cap;
        if creds.known & bit == 0 || creds.keep & bit != 0 {
            continue;
        }
        let cap_arg = libc::c_ulong::from(cap);
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap_arg, 0, 0, 0) } == 1
            && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap_arg, 0, 0, 0) } != 0
        {
            return Err(fail(Step::Bounding, cap));
        }
    }
    let cleared = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // EINVAL: a kernel without ambient capabilities (before 4.3) has none to clear.
    if cleared != 0 && errno() != libc::EINVAL {
        return Err(fail(Step::Ambient, 0));
    }
    if let Some(ids) = &creds.ids {
        let (mut ruid, mut euid, mut suid) = (0, 0, 0);
        let got = unsafe {
            libc::syscall(
                libc::SYS_getresuid,
                &raw mut ruid,
                &raw mut euid,
                &raw mut suid,
            )
        };
        if got != 0 || [ruid, euid, suid] != [ids.uid; 3] {
            // Raw system calls: glibc's wrappers would run them on every thread, from this one.
            if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
                return Err(fail(Step::KeepCaps, 0));
            }
            if unsafe { libc::syscall(libc::SYS_setgroups, ids.groups.len(), ids.groups.as_ptr()) }
                != 0
            {
                return Err(fail(Step::Groups, 0));
            }
            if unsafe { libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) } != 0 {
                return Err(fail(Step::Gid, 0));
            }
            if unsafe { libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) } != 0 {
                return Err(fail(Step::Uid, 0));
            }
            if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } != 0 {
                return Err(fail(Step::KeepCaps, 0));
            }
        }
    }
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "each half of the 64-bit set, as the kernel takes it"
    )]
    let halves = [creds.keep as u32, (creds.keep >> 32) as u32];
    let data = halves.map(|half| CapData {
        effective: half,
        permitted: half,
        inheritable: 0,
    });
    if unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) } != 0 {
        return Err(fail(Step::Capset, 0));
    }
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(fail(Step::NoNewPrivs, 0));
    }
    Ok(())
}

/// What the handler applies; null while no broadcast runs.
static REQUEST: AtomicPtr<Creds> = AtomicPtr::new(std::ptr::null_mut());
/// The thread that last applied the request.
static DONE_BY: AtomicI32 = AtomicI32::new(0);
/// Its outcome: 0, or a [`Failure::encode`]d failure.
static OUTCOME: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_request(_: libc::c_int) {
    // SAFETY: only atomics, this thread's errno and `apply` (async-signal-safe); the pointer is
    // valid while non-null (`on_every_thread` clears it before its `Creds` go).
    unsafe {
        let saved = errno();
        let creds = REQUEST.load(Ordering::Acquire);
        if let Some(creds) = creds.as_ref() {
            let outcome = apply(creds).err().map_or(0, Failure::encode);
            OUTCOME.store(outcome, Ordering::Relaxed);
            #[allow(
                clippy::cast_possible_truncation,
                reason = "gettid returns a pid_t as a long"
            )]
            DONE_BY.store(libc::syscall(libc::SYS_gettid) as i32, Ordering::Release);
        }
        *libc::__errno_location() = saved;
    }
}

/// Why the credentials could not be applied everywhere.
#[derive(Debug, thiserror::Error)]
pub(super) enum BroadcastError {
    #[error("on thread {tid}: {failure}")]
    Refused { tid: i32, failure: Failure },
    #[error("thread {tid} did not apply the new credentials within {waited:?}")]
    NoAnswer { tid: i32, waited: Duration },
    #[error("{what}: {source}")]
    System {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// How long one thread has to run the handler: it only makes a few system calls, but it may be
/// blocked in the kernel (a disk read) until then.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Applies `creds` to the calling thread, then to every other thread of the process, until a
/// listing of the threads shows none that has not applied them. Returns how many threads did.
pub(super) fn on_every_thread(creds: &Creds) -> Result<usize, BroadcastError> {
    let system = |what| move |source| BroadcastError::System { what, source };
    // No other part of the process uses real-time signals; the previous disposition is put back.
    let signal = libc::SIGRTMAX() - 1;
    // SAFETY: installs a handler that only does async-signal-safe work; `old` receives the
    // previous action, restored by `Restore`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_request as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&raw mut action.sa_mask);
        if libc::sigaction(signal, &raw const action, &raw mut old) != 0 {
            return Err(system("installing the handler")(io::Error::last_os_error()));
        }
    }
    struct Restore {
        signal: libc::c_int,
        old: libc::sigaction,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            REQUEST.store(std::ptr::null_mut(), Ordering::Release);
            // SAFETY: puts back the action saved above.
            unsafe {
                libc::sigaction(self.signal, &raw const self.old, std::ptr::null_mut());
            }
        }
    }
    let _restore = Restore { signal, old };

    // SAFETY: plain system calls without arguments.
    let (pid, me) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid)) };
    let me = i32::try_from(me).unwrap_or(-1);
    apply(creds).map_err(|failure| BroadcastError::Refused { tid: me, failure })?;
    REQUEST.store(std::ptr::from_ref(creds).cast_mut(), Ordering::Release);
    let mut done = BTreeSet::from([me]);
    loop {
        let pending: Vec<i32> = threads()
            .map_err(system("listing /proc/self/task"))?
            .into_iter()
            .filter(|tid| !done.contains(tid))
            .collect();
        if pending.is_empty() {
            return Ok(done.len());
        }
        for tid in pending {
            DONE_BY.store(0, Ordering::Release);
            // SAFETY: signals one thread of this process, whose handler is installed above.
            let sent = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) };
            if sent != 0 {
                if errno() == libc::ESRCH {
                    // It ended meanwhile.
                    done.insert(tid);
                    continue;
                }
                return Err(system("signalling a thread")(io::Error::last_os_error()));
            }
            let started = Instant::now();
            while DONE_BY.load(Ordering::Acquire) != tid {
                if !Path::new(&format!("/proc/self/task/{tid}")).exists() {
                    break;
                }
                if started.elapsed() > ANSWER_WITHIN {
                    return Err(BroadcastError::NoAnswer {
                        tid,
                        waited: ANSWER_WITHIN,
                    });
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            if DONE_BY.load(Ordering::Acquire) == tid
                && let Some(failure) = Failure::decode(OUTCOME.load(Ordering::Relaxed))
            {
                return Err(BroadcastError::Refused { tid, failure });
            }
            done.insert(tid);
        }
    }
}

/// The ids of this process's threads.
fn threads() -> io::Result<Vec<i32>> {
    let mut tids = Vec::new();
    for entry in fs::read_dir("/proc/self/task")? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_survives_the_handlers_report() {
        let failure = Failure {
            step: Step::Bounding,
            cap: 39,
            errno: libc::EPERM,
        };
        assert_eq!(Failure::decode(failure.encode()), Some(failure));
        assert_eq!(Failure::decode(0), None);
        assert!(failure.to_string().contains("capability 39"), "{failure}");
    }
}

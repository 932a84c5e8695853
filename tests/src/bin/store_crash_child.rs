//! The child half of the store's SIGKILL tests (tests/tests/store_crash.rs): inserts into the
//! store at `argv[1]` from 16 tasks, printing `ACK <event id> <row id>` after each insert
//! returned, until it is killed, or 20 s pass so an orphan does not run for ever. With a count
//! in `argv[2]`, the task that prints that many-th acknowledgement SIGKILLs the process at once,
//! leaving no time between the reply and the kill.
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hookwall::store::Store;
use hookwall_tests::store_event;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .context("usage: store_crash_child DB [KILL_AFTER]")?,
    );
    let self_kill_after: Option<u64> = args.next().map(|n| n.parse()).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = Store::open(&path).context("child: open")?;
        let acks = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..16 {
            let handle = store.handle();
            let acks = Arc::clone(&acks);
            tasks.spawn(async move {
                for n in 0.. {
                    if Instant::now() > deadline {
                        break;
                    }
                    // The pid keeps ids unique across the rounds of one test.
                    let event_id = format!("k{}-{task}-{n}", std::process::id());
                    let inserted = handle.insert(store_event("/r", &event_id)).await;
                    let id = inserted
                        .expect("child: insert")
                        .id()
                        .expect("child: a row id");
                    println!("ACK {event_id} {id}");
                    let acked = acks.fetch_add(1, Ordering::SeqCst) + 1;
                    if self_kill_after.is_some_and(|n| acked >= n) {
                        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
                        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                    }
                }
            });
        }
        tasks.join_all().await;
        Ok(())
    })
}

//! Nothing acknowledged is lost: a child process inserts events into a real SQLite store and
//! prints each one after the store answered; it is SIGKILLed mid-stream, and every event it
//! printed must be in the reopened store.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use hookwall::store::Store;

/// Parses a child's `ACK <event id> <row id>` line.
fn parse_ack(line: &str) -> Option<(String, i64)> {
    let ack = line.strip_prefix("ACK ")?;
    let mut words = ack.split(' ');
    let event_id = words.next()?.to_owned();
    let id = words.next()?.parse().ok()?;
    Some((event_id, id))
}

/// Runs the child on a store at `path` until it has acknowledged `kill_after` events, SIGKILLed
/// by this test (`self_kill` false) or by itself; returns every acknowledgement.
fn crash_child_acks(path: &Path, kill_after: usize, self_kill: bool) -> Vec<(String, i64)> {
    // stderr goes to a file: a pipe read only at the end could fill up with a failing child's
    // panic messages and block it, and this test with it.
    let stderr_path = path.with_extension("child-stderr");
    let stderr = fs::File::create(&stderr_path).expect("child stderr file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_store_crash_child"));
    command.arg(path).stdout(Stdio::piped()).stderr(stderr);
    if self_kill {
        command.arg(kill_after.to_string());
    }
    let mut child = command.spawn().expect("spawn child");

    // Lines come through a thread so that a hung child fails the test instead of hanging it.
    let stdout = child.stdout.take().expect("stdout");
    let (line_tx, lines) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked = Vec::new();
    while acked.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        // Disconnected (the child exited) or timed out: the assertions below report it.
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        acked.extend(parse_ack(&line));
    }
    // SIGKILL, mid-stream: other inserts are queued or committing right now.
    child.kill().expect("kill child");
    let status = child.wait().expect("wait child");
    // What the child printed before it died is still in the pipe; the reader ends at EOF.
    reader.join().expect("stdout reader");
    acked.extend(lines.try_iter().filter_map(|line| parse_ack(&line)));
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "child: {status}; {stderr}"
    );
    assert!(
        acked.len() >= kill_after,
        "only {} acks; child said: {stderr}",
        acked.len()
    );
    acked
}

/// Reopens the store after a kill and checks every acknowledged event is there.
fn assert_acks_stored(path: &Path, acked: &[(String, i64)]) {
    let store = Store::open(path).expect("reopen after the kill");
    for (event_id, id) in acked {
        let stored = store.find("/r", event_id).expect("find");
        assert_eq!(
            stored.map(|e| e.id),
            Some(*id),
            "acknowledged {event_id} lost"
        );
    }
    let count = store.count().expect("count");
    eprintln!(
        "crash test: {} acknowledged, {count} stored after SIGKILL",
        acked.len()
    );
    assert!(count >= acked.len() as u64);
}

#[test]
fn kill_after_acknowledgement_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.db");
    let acked = crash_child_acks(&path, 300, false);
    assert_acks_stored(&path, &acked);
}

// The parent's kill lands some time after the reply it read; a reply sent before its commit
// reached the file could slip through that gap. Killing in the replied task itself narrows it to
// the task's wake-up. One kill still catches a writer that replies just before its commit only
// now and then (the race is microseconds), so: many short rounds on one file, which also shows
// recovery from kill after kill.
#[test]
fn kill_at_the_moment_of_acknowledgement_loses_nothing() {
    const ROUNDS: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.db");
    let mut acked = Vec::new();
    for _ in 0..ROUNDS {
        acked.extend(crash_child_acks(&path, 50, true));
        assert_acks_stored(&path, &acked);
    }
}

//! [`NsServer`]: an axum router served on its own thread (a current-thread tokio runtime) from a
//! socket bound inside a test network namespace; the test application and the address-list
//! publisher run on it.

use std::{
    fs::File, net::SocketAddr, os::fd::AsRawFd as _, path::Path, sync::mpsc, thread::JoinHandle,
};

use axum::Router;
use socket2::{Domain, Protocol, Socket, Type};

/// A running server; dropping it stops it, closes every connection and frees the port.
pub struct NsServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NsServer {
    /// Serves `router` on `addr` in the namespace at `netns`; returns once the socket accepts
    /// connections. `name` names the thread and the server in messages.
    ///
    /// # Panics
    /// If the thread cannot enter the namespace, bind or start its runtime.
    #[must_use]
    pub fn start(name: &str, netns: &Path, addr: SocketAddr, router: Router) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (netns, label) = (netns.to_path_buf(), name.to_owned());
        let thread = std::thread::Builder::new()
            .name(name.replace(' ', "-"))
            .spawn(move || {
                let listener = match listen(&netns, addr) {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("tokio listener: {e}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    tokio::select! {
                        served = axum::serve(listener, router) => {
                            if let Err(e) = served {
                                eprintln!("{label} on {addr}: {e}");
                            }
                        }
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task: their sockets close at once.
                drop(runtime);
            })
            .unwrap_or_else(|e| panic!("spawning the {name} thread: {e}"));
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("the thread ended without reporting".into()));
        if let Err(e) = ready {
            let _ = thread.join();
            panic!("starting the {name} on {addr}: {e}");
        }
        Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `addr` from a thread that entered the network namespace at `netns` (the socket belongs
/// to that namespace from then on, whatever thread uses it).
fn listen(netns: &Path, addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let file = File::open(netns).map_err(|e| format!("opening {}: {e}", netns.display()))?;
    // SAFETY: setns on a valid namespace fd only changes this (dedicated) thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!(
            "setns into {}: {}",
            netns.display(),
            std::io::Error::last_os_error()
        ));
    }
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    // Up again right after down: connections in TIME_WAIT must not hold the port.
    socket
        .set_reuse_address(true)
        .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    socket
        .bind(&addr.into())
        .map_err(|e| format!("bind {addr}: {e}"))?;
    socket.listen(1024).map_err(|e| format!("listen: {e}"))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    Ok(socket.into())
}

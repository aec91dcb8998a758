//! Tells whoever started the router that it is ready or stopping: systemd
//! through `$NOTIFY_SOCKET` (`Type=notify`; `MAINPID` too, so after
//! `switchyard upgrade` systemd follows the new process), and `switchyard
//! upgrade` through the pipe named by `$SWITCHYARD_READY_FD`. The protocol
//! is one datagram of `KEY=value` lines; a crate for it would be larger
//! than this.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;

/// The variable naming the pipe `switchyard upgrade` waits on.
pub const READY_FD_ENV: &str = "SWITCHYARD_READY_FD";

/// Serving: says so to systemd and to a waiting `switchyard upgrade`.
pub(super) fn notify_ready() {
    let pid = std::process::id();
    notify(&format!("READY=1\nMAINPID={pid}\nSTATUS=serving\n"));
    if let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        // The pipe is reopened by its /proc name: the descriptor itself is
        // left alone, and a stray variable naming something that is not a
        // pipe is ignored.
        let path = format!("/proc/self/fd/{fd}");
        let is_pipe = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_fifo());
        if is_pipe {
            if let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&path) {
                let _ = writeln!(pipe, "ready {pid}");
            }
        }
    }
}

/// Draining before exit (not when handing over: the new process is the
/// service's main one by then, and the service is not stopping).
pub(super) fn notify_stopping() {
    notify("STOPPING=1\nSTATUS=draining\n");
}

fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
    } else {
        socket.send_to(message.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

//! Zero-downtime upgrade: `switchyard run --upgrade` starts beside the
//! router that runs on the same `state_dir` (found by the op log's writer
//! lock), which hands over its listening sockets and drains.
//!
//! Two sockets carry them. Pingora's graceful upgrade moves the proxy
//! listeners over `state_dir/upgrade.sock`; this module moves the admin and
//! metrics listeners over `state_dir/handover.sock`, and is also what asks
//! the old process to go (SIGQUIT): it first hands over the listeners this
//! module carries, then tells pingora to send its own. A new process that
//! dies before it asked leaves the old one serving as before.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Where pingora moves the proxy listeners.
pub(crate) const UPGRADE_SOCK: &str = "upgrade.sock";
/// Where the admin and metrics listeners move.
const HANDOVER_SOCK: &str = "handover.sock";
/// How long either side waits for the other.
const WAIT: Duration = Duration::from_secs(10);
/// How long the op log's lock may be free between two routers handing over.
const LOCK_GAP: Duration = Duration::from_secs(1);
/// The most listeners this module carries (admin, metrics).
const MAX_FDS: usize = 4;

/// The listeners a new process received, by name.
#[derive(Default)]
pub(crate) struct Inherited {
    listeners: Vec<(String, TcpListener)>,
}

impl Inherited {
    /// The listener handed over as `name`, if it listens on `addr`; a config
    /// that moved the address gets a fresh bind instead.
    pub(crate) fn take(&mut self, name: &str, addr: std::net::SocketAddr) -> Option<TcpListener> {
        let at = self.listeners.iter().position(|(n, l)| {
            n == name && l.local_addr().is_ok_and(|a| a == addr || addr.port() == 0)
        })?;
        Some(self.listeners.swap_remove(at).1)
    }
}

/// The pid of the router writing `state_dir`'s op log: the process an
/// upgrade replaces.
pub(crate) fn running_router(state_dir: &Path) -> anyhow::Result<u32> {
    let dir = crate::store::oplog::dir(state_dir);
    // A router that has just taken over holds the lock a moment after the
    // one it replaced let go: an unheld lock is looked at again for a while.
    let deadline = Instant::now() + LOCK_GAP;
    loop {
        match switchyard_oplog::writer_pid(&dir) {
            Ok(Some(pid)) => return Ok(pid),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => bail!(
                "--upgrade: no running switchyard writes {} (nothing to take over); start without --upgrade",
                dir.display()
            ),
            Err(e) => bail!(
                "--upgrade: cannot tell which process writes {}: {e}",
                dir.display()
            ),
        }
    }
}

/// In the new process: asks `old` to hand over (SIGQUIT) and receives the
/// listeners this module carries.
pub(crate) fn take_over(state_dir: &Path, old: u32) -> anyhow::Result<Inherited> {
    let path = state_dir.join(HANDOVER_SOCK);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("--upgrade: cannot listen on {}", path.display()))?;
    listener.set_nonblocking(true)?;
    let pid = rustix::process::Pid::from_raw(old as i32)
        .with_context(|| format!("--upgrade: {old} is not a pid"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::QUIT)
        .with_context(|| format!("--upgrade: cannot signal pid {old}"))?;
    tracing::info!(pid = old, "asked the running router to hand over");
    let deadline = Instant::now() + WAIT;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = std::fs::remove_file(&path);
                bail!(
                    "--upgrade: pid {old} did not hand over its listeners within {}s (is it stopping already, or a switchyard without upgrades?)",
                    WAIT.as_secs()
                )
            }
            Err(e) => return Err(e).context("--upgrade: accepting the handover"),
        }
    };
    let _ = std::fs::remove_file(&path);
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(WAIT))?;
    receive(&stream).context("--upgrade: receiving the listeners")
}

fn receive(stream: &UnixStream) -> anyhow::Result<Inherited> {
    let mut names = [0u8; 512];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut names)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    let names = std::str::from_utf8(&names[..got.bytes]).context("names are not UTF-8")?;
    let names: Vec<&str> = names.split('\n').filter(|n| !n.is_empty()).collect();
    if names.len() != fds.len() {
        bail!("{} names for {} listeners", names.len(), fds.len());
    }
    let listeners = names
        .into_iter()
        .zip(fds)
        .map(|(name, fd)| (name.to_string(), TcpListener::from(fd)))
        .collect();
    Ok(Inherited { listeners })
}

/// In the old process: sends `listeners` to the process taking over.
pub(crate) fn hand_over(
    state_dir: &Path,
    listeners: &[(&str, BorrowedFd<'_>)],
) -> anyhow::Result<()> {
    let path = state_dir.join(HANDOVER_SOCK);
    let deadline = Instant::now() + WAIT;
    let stream = loop {
        match UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "nobody took the listeners at {} within {}s",
                        path.display(),
                        WAIT.as_secs()
                    )
                })
            }
        }
    };
    let names: String = listeners.iter().map(|(n, _)| format!("{n}\n")).collect();
    let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| *fd).collect();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        bail!("too many listeners to hand over: {}", fds.len());
    }
    // An empty message carries no descriptors: always send at least a newline.
    let payload = if names.is_empty() { "\n" } else { &names };
    rustix::net::sendmsg(
        stream.as_fd(),
        &[IoSlice::new(payload.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )
    .context("sending the listeners")?;
    Ok(())
}

/// Where pingora moves the proxy listeners for `state_dir`.
pub(crate) fn upgrade_sock(state_dir: &Path) -> PathBuf {
    state_dir.join(UPGRADE_SOCK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn listeners_cross_to_the_taker_and_keep_accepting() {
        let dir = std::env::temp_dir().join(format!("sy-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let admin = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = admin.local_addr().expect("addr");
        let path = dir.join(HANDOVER_SOCK);
        let _ = std::fs::remove_file(&path);
        let taker = UnixListener::bind(&path).expect("listen");
        let sender = {
            let dir = dir.clone();
            let fd = admin.try_clone().expect("dup");
            std::thread::spawn(move || hand_over(&dir, &[("admin", fd.as_fd())]))
        };
        let (stream, _) = taker.accept().expect("accept");
        let mut inherited = receive(&stream).expect("receive");
        sender.join().expect("thread").expect("sent");
        drop(admin);
        let other: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(inherited.take("admin", other).is_none(), "moved address");
        assert!(inherited.take("metrics", addr).is_none(), "not sent");
        let got = inherited.take("admin", addr).expect("the admin listener");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        got.accept().expect("the inherited socket accepts");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

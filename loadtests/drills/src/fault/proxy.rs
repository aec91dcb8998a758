//! A TCP proxy in front of something a drill cuts off. `pass` forwards;
//! `blackhole` forwards nothing more, in either direction, on open or new
//! connections, and answers nothing (a partition that drops packets);
//! `reset` closes every connection and refuses new ones (a dead process).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    Blackhole = 1,
    Reset = 2,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Bumped on each change, so open connections look again.
    changed: Arc<tokio::sync::watch::Sender<u8>>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0: any) and forwards to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let (changed, _) = tokio::sync::watch::channel(0u8);
        let changed = Arc::new(changed);
        let (m, c) = (mode.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                match current(&m) {
                    Mode::Reset => {
                        let _ = client.set_zero_linger();
                        drop(client);
                    }
                    _ => {
                        let (m, rx) = (m.clone(), c.subscribe());
                        tokio::spawn(pipe(client, target, m, rx));
                    }
                }
            }
        });
        Ok(FaultProxy {
            addr,
            mode,
            changed,
        })
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn current(m: &AtomicU8) -> Mode {
    match m.load(Ordering::Relaxed) {
        1 => Mode::Blackhole,
        2 => Mode::Reset,
        _ => Mode::Pass,
    }
}

/// Copies both ways while the mode is `pass`; holds the connection silent
/// under `blackhole`; drops it (with a reset) under `reset`.
async fn pipe(
    client: TcpStream,
    target: SocketAddr,
    mode: Arc<AtomicU8>,
    mut changed: tokio::sync::watch::Receiver<u8>,
) {
    // A connection opened during a blackhole waits for the partition to heal.
    while current(&mode) == Mode::Blackhole {
        if changed.changed().await.is_err() {
            return;
        }
    }
    if current(&mode) == Mode::Reset {
        let _ = client.set_zero_linger();
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = [0u8; 16384];
    let mut down = [0u8; 16384];
    loop {
        if current(&mode) != Mode::Pass {
            // Hold everything: nothing read is forwarded until the mode changes.
            loop {
                match current(&mode) {
                    Mode::Pass => break,
                    Mode::Reset => {
                        if let Ok(c) = cr.reunite(cw) {
                            let _ = c.set_zero_linger();
                        }
                        if let Ok(s) = sr.reunite(sw) {
                            let _ = s.set_zero_linger();
                        }
                        return;
                    }
                    Mode::Blackhole => {
                        if changed.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        tokio::select! {
            n = cr.read(&mut up) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if current(&mode) == Mode::Pass && sw.write_all(&up[..n]).await.is_err() { return },
            },
            n = sr.read(&mut down) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if current(&mode) == Mode::Pass && cw.write_all(&down[..n]).await.is_err() { return },
            },
            _ = changed.changed() => {}
        }
    }
}

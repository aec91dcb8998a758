//! `rate-load` against a server that notes when each request arrives: every
//! request is sent and answered, and they arrive spread over time, not in
//! bursts (which the runtime's millisecond timer would make: at 4,000 a
//! second, four at a time, one burst each millisecond).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Answers every request on `stream` with `200 ok`, noting when each arrived.
fn serve(stream: TcpStream, arrivals: Arc<Mutex<Vec<Instant>>>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // The request line and header fields, up to the empty line (GETs: no body).
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if first {
                arrivals
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Instant::now());
                first = false;
            }
            if line == "\r\n" {
                break;
            }
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn requests_are_all_answered_and_arrive_spread_not_in_bursts() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = listener.local_addr().expect("its address");
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let noted = arrivals.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let noted = noted.clone();
            thread::spawn(move || serve(stream, noted));
        }
    });

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rate-load"));
    let out = Command::new(&bin)
        .args(["--addr", &addr.to_string(), "--rate", "4000", "--secs", "2"])
        .output()
        .expect("rate-load runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(" sent=8000 failed=0 "), "{report}");

    let mut times = arrivals
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(times.len(), 8000, "{report}");
    times.sort_unstable();
    let mut gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    // Spread evenly, requests are 250 µs apart; released on the pacer's
    // 100 µs ticks, most still are a tick or more apart. In millisecond
    // bursts, three gaps in four would be a few microseconds.
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_micros(50),
        "median gap between arrivals {median:?}: requests arrive in bursts\n{report}"
    );
}

#[test]
fn a_zero_tick_is_refused_with_exit_2() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rate-load"));
    let out = Command::new(&bin)
        .args(["--addr", "127.0.0.1:9", "--rate", "10", "--tick-us", "0"])
        .output()
        .expect("rate-load runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tick-us"));
}

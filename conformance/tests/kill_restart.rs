//! A server killed with SIGKILL and restarted on the same address under an XClient with
//! 50 calls in flight, for every runtime (server and XClient of that runtime): every
//! call ends by its deadline (plus scheduling slack), every success carries the right
//! answer, and calls succeed again after the restart.

use rpcx_conformance::runtimes::{Smol, Std, Tokio};
use rpcx_conformance::services::{Args, Reply};
use rpcx_conformance::xclient::{XClientRt, XOpts, XReq};
use rpcx_core::codec;
use rpcx_core::govern::FailMode;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CALL_TIMEOUT: Duration = Duration::from_millis(800);
/// Thread scheduling on a loaded 2-core machine, beyond the deadline itself.
const SLACK: Duration = Duration::from_millis(700);

fn start(runtime: &str, addr: &str) -> (Child, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fault_server"))
            .args([runtime, addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fault_server");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if !line.trim().is_empty() {
            return (child, line.trim().to_owned());
        }
        // The address may still be held for a moment after the kill: try again.
        let _ = child.wait();
        assert!(Instant::now() < deadline, "the server did not start on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill_and_restart(runtime: &str, x: &dyn XClientRt) {
    let (mut child, addr) = start(runtime, "tcp@127.0.0.1:0");
    let opts =
        XOpts { fail_mode: FailMode::Failtry, connect_timeout: Some(Duration::from_millis(300)), ..Default::default() };
    let xc = x.xclient(std::slice::from_ref(&addr), opts);
    let stop = Arc::new(AtomicBool::new(false));
    let restarted_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let (ok, failed, ok_after) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let callers: Vec<_> = (0..50)
        .map(|t| {
            let (xc, stop, restarted_at) = (xc.clone(), stop.clone(), restarted_at.clone());
            let (ok, failed, ok_after) = (ok.clone(), failed.clone(), ok_after.clone());
            std::thread::spawn(move || {
                let mut i = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    let (a, b) = (t * 1000 + i, i % 97);
                    i += 1;
                    let began = Instant::now();
                    let r = xc.call(XReq::args("Meta", &Args { a, b }).timeout(CALL_TIMEOUT));
                    let took = began.elapsed();
                    assert!(took <= CALL_TIMEOUT + SLACK, "a call took {took:?}: {r:?}");
                    match r {
                        Ok(m) => {
                            let reply: Reply =
                                codec::from_payload(m.header.serialize_type(), &m.payload).expect("reply");
                            assert_eq!(reply.c, a + b, "a wrong answer");
                            ok.fetch_add(1, Ordering::SeqCst);
                            let after = restarted_at.lock().unwrap().is_some_and(|r| began > r);
                            if after {
                                ok_after.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let before = ok.load(Ordering::SeqCst);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    let (mut child, again) = start(runtime, &addr);
    assert_eq!(again, addr);
    *restarted_at.lock().unwrap() = Some(Instant::now());
    let end = Instant::now() + Duration::from_secs(10);
    while ok_after.load(Ordering::SeqCst) < 200 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.join().expect("every call checked");
    }
    xc.close();
    let _ = child.kill();
    let _ = child.wait();
    assert!(before > 0, "calls succeeded before the kill");
    assert!(ok_after.load(Ordering::SeqCst) >= 200, "calls succeed after the restart: {ok_after:?}, failed {failed:?}");
}

#[test]
fn tokio() {
    kill_and_restart("tokio", &Tokio);
}

#[test]
fn smol() {
    kill_and_restart("smol", &Smol);
}

#[test]
fn std() {
    kill_and_restart("std", &Std);
}

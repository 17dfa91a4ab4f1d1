//! Runtime-neutral services used by every scenario.

use bytes::Bytes;
use rpcx_core::service::{Context, Router, Service};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Args {
    #[serde(rename = "A")]
    pub a: i64,
    #[serde(rename = "B")]
    pub b: i64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Reply {
    #[serde(rename = "C")]
    pub c: i64,
}

/// A sleep that works on any executor: a helper thread wakes the task.
pub fn sleep(d: Duration) -> impl Future<Output = ()> + Send {
    struct Sleep {
        until: Instant,
        shared: Arc<Mutex<(bool, Option<Waker>)>>,
        started: bool,
    }
    impl Future for Sleep {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
            let mut st = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            if st.0 || Instant::now() >= self.until {
                return Poll::Ready(());
            }
            st.1 = Some(cx.waker().clone());
            drop(st);
            if !self.started {
                self.started = true;
                let (shared, until) = (self.shared.clone(), self.until);
                std::thread::spawn(move || {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
                    st.0 = true;
                    if let Some(w) = st.1.take() {
                        w.wake();
                    }
                });
            }
            Poll::Pending
        }
    }
    Sleep { until: Instant::now() + d, shared: Arc::new(Mutex::new((false, None))), started: false }
}

pub const TOKEN: &str = "conformance-secret";

/// `Arith` (Mul, Error, Slow, Deadline), `Echo` (Raw, Meta), `Push.Me`; with `auth`,
/// every request must carry `__AUTH = TOKEN`.
pub fn router(auth: bool) -> Router {
    router_counting(auth, Arc::default())
}

/// [`router`], with `started` counting `Arith.Slow` handlers that began, so a scenario
/// can wait for its calls to be in flight rather than sleep.
pub fn router_counting(auth: bool, started: Arc<AtomicUsize>) -> Router {
    let arith = Service::new("Arith")
        .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) })
        .method("Error", |_c: Context, a: Args| async move {
            Err::<Reply, _>(format!("intentional error A={}", a.a).into())
        })
        // Divides before its future exists: B = 0 panics while the handler is made.
        .method("Div", |_c: Context, a: Args| {
            if a.b == 0 {
                panic!("attempt to divide by zero");
            }
            let c = a.a / a.b;
            async move { Ok(Reply { c }) }
        })
        // Panics after waiting: the panic happens in a spawned task (or a worker).
        .method("PanicLater", |_c: Context, a: Args| async move {
            sleep(Duration::from_millis(1)).await;
            if a.b == 0 {
                panic!("late panic");
            }
            Ok(Reply { c: a.a / a.b })
        })
        .method("Slow", move |_c: Context, a: Args| {
            started.fetch_add(1, Ordering::SeqCst);
            async move {
                sleep(Duration::from_millis(a.a as u64)).await;
                Ok(Reply { c: a.a })
            }
        })
        .method("Deadline", |c: Context, _a: Args| async move {
            let ms = c.deadline().map(|d| d.saturating_duration_since(Instant::now()).as_millis() as i64).unwrap_or(-1);
            Ok(Reply { c: ms })
        });
    let echo = Service::new("Echo").raw_method("Raw", |_c: Context, p: Bytes| async move { Ok(p) }).method(
        "Meta",
        |c: Context, a: Args| async move {
            for (k, v) in c.metadata().iter() {
                if !k.starts_with(b"__") {
                    c.set_response_metadata(k.clone(), v.clone());
                }
            }
            Ok(Reply { c: a.a + a.b })
        },
    );
    let push = Service::new("Push").method("Me", |c: Context, a: Args| async move {
        for k in 1..=a.a {
            let mut md = rpcx_core::wire::Metadata::new();
            md.insert("i", Bytes::from(k.to_string()));
            c.pusher().push("Push", "Note", md, format!("push-{k}")).map_err(|e| e.to_string())?;
        }
        Ok(Reply { c: a.a })
    });
    let r = Router::new().service(arith).service(echo).service(push);
    if auth {
        r.auth(|_c, token| async move { if token == TOKEN { Ok(()) } else { Err("auth failed".to_owned()) } })
    } else {
        r
    }
}

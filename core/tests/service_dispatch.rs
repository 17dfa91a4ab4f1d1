//! The server dispatch every runtime shares (`service::Dispatcher` / `Session`), driven
//! by hand: no IO, no clock, no executor.

use bytes::Bytes;
use rpcx_core::conn::ServerConnection;
use rpcx_core::service::{
    Context, Dispatch, Dispatcher, EVENTS_PER_WRITE, Peer, Push, PushQueue, PushSink, Pusher, Router, ServerSettings,
    Service, Session, Waiting,
};
use rpcx_core::wire::{Message, Metadata, SerializeType, StreamDecoder};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Instant;

/// A push queue as a runtime would keep one: a shared list behind the `Pusher`.
#[derive(Default, Clone)]
struct Queue(Arc<Mutex<Vec<Push>>>);

impl PushSink for Queue {
    fn push(
        &self,
        service_path: Bytes,
        service_method: Bytes,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<(), rpcx_core::conn::PushError> {
        self.0.lock().unwrap().push(Push { service_path, service_method, metadata, payload });
        Ok(())
    }
}

impl PushQueue for Queue {
    fn pusher(&mut self) -> Pusher {
        Pusher::new(Arc::new(self.clone()))
    }
    fn next_push(&mut self) -> Option<Push> {
        let mut q = self.0.lock().unwrap();
        (!q.is_empty()).then(|| q.remove(0))
    }
}

/// Pending once, then ready: a handler that has to wait.
struct Later(bool);

impl Future for Later {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) { Poll::Ready(()) } else { Poll::Pending }
    }
}

fn router() -> Router {
    Router::new().service(
        Service::new("S")
            .raw_method("Echo", |_c: Context, p: Bytes| async move { Ok(p) })
            .raw_method("PushFirst", |c: Context, p: Bytes| async move {
                c.pusher().push("Note", "Before", Metadata::new(), p.clone()).map_err(|e| e.to_string())?;
                Ok(p)
            })
            .raw_method("Wait", |_c: Context, p: Bytes| async move {
                Later(false).await;
                Ok(p)
            }),
    )
}

fn frame(method: &str, seq: u64) -> Vec<u8> {
    let mut m = Message::request(SerializeType::NONE, seq, "S", method.to_owned());
    m.payload = Bytes::from(seq.to_string());
    let mut out = Vec::new();
    m.encode(&Default::default(), &mut out).unwrap();
    out
}

struct Rig {
    d: Arc<Dispatcher>,
    conn: ServerConnection,
    session: Session,
    pushes: Queue,
    out: Vec<u8>,
    now: Instant,
}

impl Rig {
    fn new() -> Self {
        let now = Instant::now();
        let d = Arc::new(Dispatcher::new(router(), ServerSettings::default()));
        let session = d.session(Arc::new(Peer::named("test")), now).expect("no hook refuses");
        Self { conn: session.connection(now), d, session, pushes: Queue::default(), out: Vec::new(), now }
    }

    /// One round of the drive contract: output, then dispatch.
    fn step(&mut self, spawned: &mut Vec<Waiting>) -> Dispatch {
        while self.conn.poll_transmit(&mut self.out).is_some() {}
        self.session.dispatch(&mut self.conn, self.now, &mut self.pushes, &mut |w| spawned.push(w))
    }

    fn frames_out(&mut self) -> Vec<Message> {
        while self.conn.poll_transmit(&mut self.out).is_some() {}
        let mut dec = StreamDecoder::new(Default::default());
        dec.feed(&std::mem::take(&mut self.out));
        std::iter::from_fn(|| dec.next_message().unwrap()).collect()
    }
}

#[test]
fn a_large_batch_is_dispatched_in_write_sized_rounds() {
    let mut rig = Rig::new();
    let n = EVENTS_PER_WRITE + 8;
    let batch: Vec<u8> = (1..=n as u64).flat_map(|s| frame("Echo", s)).collect();
    rig.conn.handle_input(rig.now, &batch);
    let mut spawned = Vec::new();
    assert_eq!(rig.step(&mut spawned), Dispatch::Backlog, "the first round stops at the budget");
    assert_eq!(rig.frames_out().len(), EVENTS_PER_WRITE, "one budget of responses is ready to write");
    assert_eq!(rig.step(&mut spawned), Dispatch::Handled);
    assert_eq!(rig.step(&mut spawned), Dispatch::Idle);
    let rest = rig.frames_out();
    assert_eq!(rest.len(), 8);
    assert_eq!(rest.last().unwrap().header.seq(), n as u64, "in order");
    assert!(spawned.is_empty(), "ready handlers are answered inline");
    let t = rig.d.stats();
    assert_eq!((t.requests, t.responses, t.connections_open), (n as u64, n as u64, 1));
}

#[test]
fn pushes_queued_by_a_handler_go_out_before_its_response() {
    let mut rig = Rig::new();
    rig.conn.handle_input(rig.now, &frame("PushFirst", 7));
    let mut spawned = Vec::new();
    while rig.step(&mut spawned) != Dispatch::Idle {}
    let out = rig.frames_out();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].service_path.as_ref(), b"Note", "the push first");
    assert!(out[0].header.is_oneway());
    assert_eq!(out[1].header.seq(), 7, "then the response");
    assert_eq!(rig.d.stats().pushes, 1);
}

#[test]
fn a_handler_that_waits_is_handed_out_and_finished_later() {
    let mut rig = Rig::new();
    rig.conn.handle_input(rig.now, &frame("Wait", 3));
    let mut spawned = Vec::new();
    while rig.step(&mut spawned) != Dispatch::Idle {}
    assert_eq!(spawned.len(), 1, "the waiting handler is the only thing to spawn");
    assert!(rig.frames_out().is_empty(), "no response before it finishes");
    let mut w = spawned.pop().unwrap();
    let mut cx = std::task::Context::from_waker(Waker::noop());
    let Poll::Ready(served) = Pin::new(&mut w).poll(&mut cx) else { panic!("ready on its second poll") };
    rig.session.finish(&mut rig.conn, rig.now, served, &mut rig.pushes);
    let out = rig.frames_out();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].header.seq(), out[0].payload.as_ref()), (3, &b"3"[..]));
}

#[test]
fn garbage_is_counted_as_a_protocol_error_and_the_session_end_closes_the_count() {
    let mut rig = Rig::new();
    rig.conn.handle_input(rig.now, &[0x55; 32]);
    let mut spawned = Vec::new();
    while rig.step(&mut spawned) != Dispatch::Idle {}
    assert!(rig.conn.is_closed());
    assert_eq!(rig.d.stats().protocol_errors, 1);
    let Rig { d, conn, mut session, .. } = rig;
    session.end(&conn);
    assert_eq!(d.stats().connections_open, 0);
    drop(session);
    assert_eq!(d.stats().connections_open, 0, "ending twice counts once");
}

//! Server-side scenarios (the client is a raw socket), against every server runtime.

use rpcx_conformance::runtimes::{Smol, Std, Tokio};
use rpcx_conformance::scenarios;

#[test]
fn tokio_server_at_max_in_flight_pushes_back() {
    scenarios::server_at_max_in_flight_pushes_back(&Tokio);
}

#[test]
fn smol_server_at_max_in_flight_pushes_back() {
    scenarios::server_at_max_in_flight_pushes_back(&Smol);
}

#[test]
fn std_server_at_max_in_flight_pushes_back() {
    scenarios::server_at_max_in_flight_pushes_back(&Std);
}

#[test]
fn tokio_server_close_does_not_wait_for_a_peer_that_stopped_reading() {
    scenarios::server_close_does_not_wait_for_a_peer_that_stopped_reading(&Tokio);
}

#[test]
fn smol_server_close_does_not_wait_for_a_peer_that_stopped_reading() {
    scenarios::server_close_does_not_wait_for_a_peer_that_stopped_reading(&Smol);
}

#[test]
fn std_server_close_does_not_wait_for_a_peer_that_stopped_reading() {
    scenarios::server_close_does_not_wait_for_a_peer_that_stopped_reading(&Std);
}

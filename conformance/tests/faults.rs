//! The fault suite (`rpcx_conformance::faults`) against every server runtime.

rpcx_conformance::on_every_server!(
    faults;
    trickled_frames_are_closed_by_the_frame_timeout,
    a_thousand_idle_connections,
    garbage_truncation_and_bombs_while_another_calls,
    a_peer_that_never_reads_is_closed_under_memory_pressure,
    connect_close_churn_leaks_nothing,
    the_connection_cap_closes_new_connections_at_once,
    panicking_handlers_in_every_mode,
);

//! Every scenario against every runtime pair (server runtime x client runtime).

use rpcx_conformance::runtimes::{Smol, Std, Tokio};
use rpcx_conformance::scenarios;

macro_rules! pair {
    ($name:ident, $server:expr, $client:expr) => {
        mod $name {
            use super::*;
            macro_rules! scenario {
                ($s:ident) => {
                    #[test]
                    fn $s() {
                        scenarios::$s(&$server, &$client);
                    }
                };
            }
            scenario!(round_trip_every_serialize_type);
            scenario!(gzip_over_1024_both_ways);
            scenario!(metadata_both_ways);
            scenario!(error_response);
            scenario!(panicking_handlers_keep_the_connection);
            scenario!(unknown_service_and_method);
            scenario!(oneway);
            scenario!(server_push);
            scenario!(heartbeat);
            scenario!(deadline);
            scenario!(auth_pass_and_fail);
            scenario!(graceful_shutdown_with_calls_in_flight);
            scenario!(server_killed_mid_call);
            scenario!(in_process_memu);
            scenario!(http_connect_tunnel);
            scenario!(websocket_transport);
        }
    };
}

pair!(tokio_server_tokio_client, Tokio, Tokio);
pair!(tokio_server_std_client, Tokio, Std);
pair!(std_server_tokio_client, Std, Tokio);
pair!(std_server_std_client, Std, Std);
pair!(smol_server_smol_client, Smol, Smol);
pair!(smol_server_tokio_client, Smol, Tokio);
pair!(smol_server_std_client, Smol, Std);
pair!(tokio_server_smol_client, Tokio, Smol);
pair!(std_server_smol_client, Std, Smol);

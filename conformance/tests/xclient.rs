//! Every XClient scenario against every runtime pair (server runtime x XClient runtime).

use rpcx_conformance::runtimes::{Smol, Std, Tokio};
use rpcx_conformance::xscenarios;

macro_rules! pair {
    ($name:ident, $server:expr, $xclient:expr) => {
        mod $name {
            use super::*;
            macro_rules! scenario {
                ($s:ident) => {
                    #[test]
                    fn $s() {
                        xscenarios::$s(&$server, &$xclient);
                    }
                };
            }
            scenario!(request_builder_options_reach_the_server);
            scenario!(dropped_xcall_cancels_and_detached_runs_to_its_end);
            scenario!(concurrent_first_dials_share_one_dial);
            scenario!(sticky_is_recorded_only_on_ok);
            scenario!(plan_ends_promptly_when_every_server_refuses);
            scenario!(consistent_hash_keys_per_call);
            scenario!(geo_selector_picks_the_nearest_server);
            scenario!(send_raw_goes_through_the_fail_mode);
            scenario!(bidirectional_xclient_tags_pushes_and_lost_connections);
            scenario!(xclient_over_http_connect_and_websocket);
            scenario!(xclient_hooks_steer_selection_and_see_every_attempt);
        }
    };
}

pair!(tokio_server_tokio_xclient, Tokio, Tokio);
pair!(tokio_server_std_xclient, Tokio, Std);
pair!(std_server_tokio_xclient, Std, Tokio);
pair!(std_server_std_xclient, Std, Std);
pair!(smol_server_smol_xclient, Smol, Smol);
pair!(smol_server_tokio_xclient, Smol, Tokio);
pair!(smol_server_std_xclient, Smol, Std);
pair!(tokio_server_smol_xclient, Tokio, Smol);
pair!(std_server_smol_xclient, Std, Smol);

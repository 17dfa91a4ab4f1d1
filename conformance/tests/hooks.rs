//! Hooks and the built-in plugins on every runtime pair (server runtime x client
//! runtime): `cargo test -p rpcx-conformance --test hooks`.

use rpcx_conformance::hook_scenarios;
use rpcx_conformance::runtimes::{Smol, Std, Tokio};

macro_rules! pair {
    ($name:ident, $server:expr, $client:expr) => {
        mod $name {
            use super::*;
            macro_rules! scenario {
                ($s:ident) => {
                    #[test]
                    fn $s() {
                        hook_scenarios::$s(&$server, &$client);
                    }
                };
            }
            scenario!(server_hooks_run_in_order_and_their_effects_hold);
            scenario!(panicking_server_hooks_fail_only_their_request);
            scenario!(register_refusal_on_shutdown_and_refused_connections);
            scenario!(error_text_functions_on_both_sides);
            scenario!(alias_serves_a_method_under_another_name);
            scenario!(rate_limiters_wait_refuse_and_close);
            scenario!(client_hooks_see_and_change_every_call);
        }
    };
}

pair!(tokio_server_tokio_client, Tokio, Tokio);
pair!(tokio_server_std_client, Tokio, Std);
pair!(tokio_server_smol_client, Tokio, Smol);
pair!(std_server_tokio_client, Std, Tokio);
pair!(std_server_std_client, Std, Std);
pair!(std_server_smol_client, Std, Smol);
pair!(smol_server_tokio_client, Smol, Tokio);
pair!(smol_server_std_client, Smol, Std);
pair!(smol_server_smol_client, Smol, Smol);

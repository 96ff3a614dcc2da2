//! The `rollout:edge/kernel` export: core's bucketing function and the
//! per-request routing work, reachable by the host so the frozen vectors are
//! checked inside a wasm guest and the guest's own cost can be timed.

use rollout_core::edge::{Held, KV_ACTIVE};
use rollout_core::{Config, Request, bucket_of, decide};
use spin_sdk::key_value::Store;

wit_bindgen::generate!({
    path: "../../wit",
    world: "rollout:edge/kernel-exports",
});

/// The value the edge stored for what it applied (`rollout.active`), read as
/// a request reads it, or `None` without a store or a config. Decoded by
/// [`Held::read`], as the edge decodes it.
fn stored_config(store: Option<&Store>) -> Option<Vec<u8>> {
    store?.get(KV_ACTIVE).ok()?
}

struct Kernel;

impl exports::rollout::edge::kernel::Guest for Kernel {
    fn bucket(salt: String, key: String) -> u32 {
        bucket_of(&salt, &key).get()
    }

    fn bucket_repeat(salt: String, key: String, times: u32) -> u32 {
        let mut last = 0;
        for _ in 0..times {
            last = bucket_of(std::hint::black_box(&salt), std::hint::black_box(&key)).get();
        }
        last
    }

    fn route_repeat(
        host: String,
        path: String,
        headers: Vec<(String, String)>,
        times: u32,
    ) -> Result<String, String> {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut arm = String::new();
        for _ in 0..times {
            // The same steps as a request: a store handle, the compact
            // config, a decision.
            let store = Store::open_default().ok();
            let bytes = stored_config(store.as_ref()).ok_or("no config applied")?;
            // A frame in this build's compact form: what a real edge finds
            // after a push (an older form would be re-derived, not timed).
            let Held::Ready(stored) = Held::read(Some(&bytes)) else {
                return Err("stored config is not in this build's compact form".to_owned());
            };
            let request = Request {
                method: "GET",
                host: &host,
                path: &path,
                query: "",
                headers: &headers,
                client_ip: Some("192.0.2.1"),
                mint: Some([7; 16]),
            };
            let config = stored.config_for(&request).ok_or("route does not decode")?;
            arm = decide(&config, &request).arm.as_str().to_owned();
        }
        Ok(arm)
    }

    fn decide_repeat(
        config: String,
        host: String,
        path: String,
        headers: Vec<(String, String)>,
        times: u32,
    ) -> Result<String, String> {
        let config = Config::from_json(config.as_bytes()).map_err(|e| e.to_string())?;
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let request = Request {
            method: "GET",
            host: &host,
            path: &path,
            query: "",
            headers: &headers,
            client_ip: Some("198.51.100.23"),
            mint: None,
        };
        let mut arm = "";
        for _ in 0..times {
            arm = decide(
                std::hint::black_box(&config),
                std::hint::black_box(&request),
            )
            .arm
            .as_str();
        }
        Ok(arm.to_owned())
    }
}

export!(Kernel);

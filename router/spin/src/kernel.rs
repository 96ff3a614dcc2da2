//! The `rollout:edge/kernel` export: core's bucketing function, reachable by
//! the host so the frozen vectors are checked against this very build.

use rollout_core::bucket_of;

wit_bindgen::generate!({
    path: "../../wit",
    world: "rollout:edge/kernel-exports",
});

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
}

export!(Kernel);

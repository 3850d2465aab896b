#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        // SAFETY: libFuzzer runs this before any input, on the only thread there is.
        unsafe { plateau_fuzz::without_plugin_cache() }
    },
    |data: &[u8]| {
        plateau_fuzz::plugin_module(data);
    }
);

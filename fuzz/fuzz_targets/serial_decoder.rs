#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shv_fuzz::serial_decoder(data));

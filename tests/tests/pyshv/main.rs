//! Interop with pySHV 0.13.0 (from the pinned venv) as client, device and broker.

mod interop;
mod tree_pyshv;

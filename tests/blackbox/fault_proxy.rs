//! The EC2 fault proxy for the black-box tests: it lives in
//! `pacer-test-support` (tests/support), shared with `make bench`, which
//! times launches through it.

pub use pacer_test_support::fault_proxy::{Call, Fault, FaultProxy};

//! moto_server for the black-box tests: the harness lives in
//! `pacer-test-support` (tests/support), shared with `make bench`.

pub use pacer_test_support::moto::Moto;

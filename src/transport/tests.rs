//! Loopback tests.

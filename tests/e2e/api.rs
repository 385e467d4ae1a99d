//! Placeholder replaced by the API workflow tests.

//! Shared helpers for the integration tests (the tests themselves are in tests/tests/).

//! Network helpers.

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it for a listener that
/// is closed again before this returns). Another process may take it meanwhile, which is
/// unlikely enough for tests.
///
/// ```
/// let port = cqrs_test_support::net::free_port();
/// assert_ne!(port, 0);
/// ```
///
/// # Panics
/// When no listener can be bound on 127.0.0.1 (no loopback interface).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot bind a TCP listener on 127.0.0.1: {e}"))
}

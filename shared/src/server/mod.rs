//! Serving a router over plain HTTP or TLS (being written).

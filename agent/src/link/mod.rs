//! The host's link to airlock-server: its identity (key, certificate, server CA), enrolment
//! (trading a one-time token for a certificate over TLS pinned to the CA hash in the token),
//! the enrolment-time TLS, and the long-lived link client.
pub mod client;
pub mod enroll;
pub mod identity;
mod ship;
pub mod tls;

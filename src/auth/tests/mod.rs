//! Behaviour tests over real HTTP (127.0.0.1, ephemeral ports) with real keys and signatures.

mod harness;

mod api_keys;
mod introspection;
mod jwks;
mod jwt;

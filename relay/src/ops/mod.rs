//! One module per request kind: `parse` turns wire fields into typed values
//! (or a [`Refusal`](crate::refusal::Refusal)), `apply` performs the request
//! against the [`Relay`](crate::relay::Relay).

pub(crate) mod admin;
pub(crate) mod device;
pub(crate) mod hello;
pub(crate) mod mailbox;
pub(crate) mod put;
pub(crate) mod register;
pub(crate) mod slot;
pub(crate) mod tokens;

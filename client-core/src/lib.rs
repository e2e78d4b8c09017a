//! `sotto-core`: everything a sotto client does, as a library.
//!
//! (Module map filled in as the modules land.)

mod net;

pub use net::{MailboxSigner, NetError, Pushed, RELAY_SERVER_NAME, RelayAddr, RelayConnection};

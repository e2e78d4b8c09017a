//! `sotto-core`: everything a sotto client does, as a library.
//!
//! (Module map filled in as the modules land.)

mod store;
pub use store::{
    Batch, BlindId, Entry, KeySource, MAX_KEY_LEN, MAX_VALUE_LEN, MemoryStore, SledStore, Store,
    StoreError, Tree,
};

//! `sotto-core`: everything a sotto client does, as a library.
//!
//! (Module map filled in as the modules land.)

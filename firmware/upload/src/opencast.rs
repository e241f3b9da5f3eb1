//! The Opencast target (chunked upload service, addTrack fallback); being built.

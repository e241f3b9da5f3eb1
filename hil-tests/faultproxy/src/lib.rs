//! A seeded TCP fault proxy for upload tests; being built.

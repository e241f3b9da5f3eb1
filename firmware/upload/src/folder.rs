//! The folder target; being built.

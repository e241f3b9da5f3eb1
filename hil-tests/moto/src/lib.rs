//! Starts moto's S3 server on loopback for tests; being built.

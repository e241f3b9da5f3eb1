//! The S3-compatible target (multipart upload); being built.

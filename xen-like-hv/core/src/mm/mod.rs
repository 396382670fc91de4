//! Machine memory management.

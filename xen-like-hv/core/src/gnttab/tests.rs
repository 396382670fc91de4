//! Host tests of the grant-table operations.

//! Generators of valid files, for property tests and benchmarks.

//! Runnable examples and benchmarks of WDS live in this package's `[[example]]` targets.

//! kiln-recsys

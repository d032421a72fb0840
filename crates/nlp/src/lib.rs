//! kiln-nlp

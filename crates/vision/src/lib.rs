//! kiln-vision

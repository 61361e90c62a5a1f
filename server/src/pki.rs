//! TODO(skeleton): pki

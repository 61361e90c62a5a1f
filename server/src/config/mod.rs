//! TODO(skeleton): config

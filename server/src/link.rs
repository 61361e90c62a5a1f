//! TODO(skeleton): link

//! TODO(skeleton): auth

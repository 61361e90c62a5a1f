//! TODO(skeleton): enroll

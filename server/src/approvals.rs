//! TODO(skeleton): approvals

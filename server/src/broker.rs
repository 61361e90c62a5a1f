//! TODO(skeleton): broker

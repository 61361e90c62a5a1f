//! Minimal BTF reader for kernel struct member offsets.

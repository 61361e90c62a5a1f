//! airlockd's main loop.

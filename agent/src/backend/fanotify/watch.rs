//! The watcher thread: follows protected trees and policy roots through inotify (see the
//! backend's module docs) and publishes what it marked into the rule set.
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use super::marks::{self, MarkState, Marker};
use super::rules::Ruleset;
use super::{Shared, sys};

/// The watcher thread: follows protected trees and policy roots through inotify.
pub(super) fn watch_loop(
    shared: &Shared,
    state: &Mutex<MarkState>,
    inotify: &OwnedFd,
    stop: OwnedFd,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while sys::wait_readable(inotify.as_fd(), stop.as_fd()) {
        loop {
            let n = match sys::read_some(inotify.as_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "reading inotify events failed");
                    break;
                }
            };
            let events = sys::parse_inotify(&buf[..n]);
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            let st = &mut *guard;
            for ev in events.iter().filter(|e| e.mask & libc::IN_IGNORED != 0) {
                st.watches.remove(&ev.wd);
            }
            let scopes = (shared.ruleset.read().unwrap_or_else(|e| e.into_inner()))
                .scopes
                .clone();
            let mut delta = Ruleset::new(scopes);
            let mut m = Marker::new(
                shared.group.as_fd(),
                inotify.as_fd(),
                &st.marks,
                &st.tree_roots,
            );
            let roots_touched = marks::on_inotify(&mut m, &st.watches, &events, &mut delta);
            let marks::Batch {
                marks: new_marks,
                watches: new_watches,
                members,
                held,
                notes,
            } = m.finish();
            delta.members = members;
            st.held.extend(held);
            let dead = if roots_touched {
                marks::sweep_dead_roots(&mut st.held)
            } else {
                Vec::new()
            };
            for (k, rec) in new_marks {
                st.marks
                    .entry(k)
                    .and_modify(|r| (r.mask, r.path) = (r.mask | rec.mask, rec.path.clone()))
                    .or_insert(rec);
            }
            for (wd, w) in new_watches {
                st.watches
                    .entry(wd)
                    .and_modify(|o| {
                        (o.path, o.key) = (w.path.clone(), w.key);
                        o.tree = o.tree.or(w.tree);
                    })
                    .or_insert(w);
            }
            for n in notes {
                tracing::warn!(note = %n, "fanotify backend");
            }
            if delta.is_empty() && delta.members.is_empty() && dead.is_empty() {
                continue;
            }
            // Still under the state lock: an apply cannot publish a new rule set between our
            // marking and this update (it would get this batch's rules of the old policy).
            let mut rs = shared.ruleset.write().unwrap_or_else(|e| e.into_inner());
            for (k, _) in &dead {
                rs.forget(*k);
            }
            rs.absorb(delta);
            drop(rs);
            drop(guard);
        }
    }
}

//! The clock stamp put on every event: which clock, and its offset from the configured time
//! server when last measured. The trusted-time task updates it; events read it.

use crate::event::ClockStamp;
use std::sync::RwLock;

static CURRENT: RwLock<Option<ClockStamp>> = RwLock::new(None);

pub fn current() -> ClockStamp {
    CURRENT
        .read()
        .ok()
        .and_then(|c| c.clone())
        .unwrap_or_default()
}

pub fn set(stamp: ClockStamp) {
    if let Ok(mut c) = CURRENT.write() {
        *c = Some(stamp);
    }
}

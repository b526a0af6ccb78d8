//! Tests that load netmon or the machine on purpose (hundreds of services, reload storms, slow
//! name servers, connection floods, fd limits): kept in a binary of their own so they do not
//! share the machine with the end-to-end tests' timing, and run one at a time.

#[path = "../support/mod.rs"]
mod support;

mod faults;
mod reload;

/// The scenarios measure timing and load the machine: one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

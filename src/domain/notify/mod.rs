//! Notifications (cortex-notify): what the operator configured, and the formats it keeps.
//!
//! - [`config`]: `coordination/config/notifications.json`, its sinks and rules, checked.
//! - [`secrets`]: the 0600 secrets file the config names.
//! - [`rules`]: matching events, throttles, digests, quiet hours (pure, time as an argument).
//! - [`body`]: the JSON body and the text a notification carries.
//! - [`outbox`]: one file per notification and sink, written before it is sent.
//! - [`state`]: `coordination/notify/state.json`: the event-log cursor, rule state, counters.

pub mod body;
pub mod config;
pub mod outbox;
pub mod rules;
pub mod secrets;
pub mod state;

//! Many servers at once: an inventory of hosts and groups, parallel unlock
//! with a live display and a per-host report, waiting until each system is
//! really up (its own pinned SSH key answering), and `watch`, the
//! unattended mode. Builds on [`crate::client`]; touches no local disk
//! except the inventory, `ssh_config`, known-hosts files and passphrase
//! files it is pointed at.

pub mod cmd;
pub mod inventory;
pub mod preflight;
pub mod probe;
pub mod report;
pub mod resolve;
pub mod run;
pub mod secrets;
pub mod ssh_config;
pub mod watch;

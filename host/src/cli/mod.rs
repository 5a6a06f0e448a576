//! The subcommands beyond serving: `new`, `send` and `check`, one file each.
//! `main.rs` parses the command line and prints; these do the work.

pub mod check;
pub mod new;
pub mod send;

//! The subcommands beyond serving: `build`, `new` (with `new_js`), `send` and
//! `check`, one file each.
//! `main.rs` parses the command line; these do the work, and `send` prints
//! what it saw (the answer on stdout, timings and verdicts on stderr).

pub mod build;
pub mod check;
pub mod new;
pub mod new_js;
pub mod new_python;
pub mod send;

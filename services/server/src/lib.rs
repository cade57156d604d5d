//! The `anshin` binary's library: the CLI, the HTTP application composing every service, and
//! the web shell. Tests build the same application in-process.

pub mod app;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod health;
pub mod keys;
pub mod keys_cli;
pub mod migrate;
pub mod openapi;
pub mod services;
pub mod signing_keys;
pub mod web;

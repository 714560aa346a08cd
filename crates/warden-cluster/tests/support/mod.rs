// Shared with the warden crate's tests (by path), which use what these do not.
#![allow(dead_code)]

pub mod redis;

//! The console's pages, one module per section.

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod keys;
pub(crate) mod overview;
pub(crate) mod tenants;
pub(crate) mod tools;

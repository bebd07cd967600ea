//! The API dialects. Each translates its wire format into core calls and back.

pub mod form;
pub mod miicloud;
pub mod necid;

#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! otpgate
pub mod otp;
pub mod store;
pub mod token;
mod util;

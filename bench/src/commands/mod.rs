pub mod authorize;
pub mod coldstart;
pub mod hotitem;
pub mod keyguard;
pub mod nightly;
pub mod scale;
pub mod serve;
pub mod verify;

//! The local socket: accepting connections, checking who is calling, reading framed requests
//! and writing replies. Nothing here makes decisions; [`handlers`] maps each method to the
//! engine that answers it.

pub mod connection;
pub mod handlers;
pub mod peer;
pub mod reply_queue;
pub mod server;
pub mod socket;

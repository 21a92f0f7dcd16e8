//! What the raw loopback servers of the fault tests do with a connection.

#![allow(dead_code)] // each user takes what it needs

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads up to the blank line that ends the head; the clients' requests have no body.
///
/// A server that closes a socket with unread bytes makes Linux send RST instead of FIN,
/// which would turn "closed" into "reset" at random: read the request first.
pub(crate) async fn read_request_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

pub(crate) async fn hold_until_peer_closes(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(1..) = stream.read(&mut buf).await {}
}

/// Closes with an RST instead of a FIN (linger 0).
pub(crate) fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

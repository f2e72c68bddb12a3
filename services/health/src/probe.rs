//! `ikit-health --healthcheck`: the container's own liveness probe. Distroless images have no
//! shell, curl or wget, so the binary asks itself: one `GET /healthz` over loopback, exit 0 on a
//! 200, 1 otherwise. Plain `std` (no runtime), bounded by a timeout on every step.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Where a process listening on `listen` is reached from inside its own container: a wildcard
/// address becomes loopback of the same family.
pub fn loopback_for(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Whether an HTTP response's status line says 200.
pub fn is_ok_status_line(response: &[u8]) -> bool {
    let line = response.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let version = words.next().unwrap_or_default();
    version.starts_with(b"HTTP/1.") && words.next() == Some(b"200".as_slice())
}

/// `GET /healthz` on `addr`; `Err` says why the probe failed.
pub fn healthcheck(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let target = loopback_for(addr);
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("cannot send the probe: {e}"))?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).map_err(|e| format!("no answer: {e}"))?;
    if is_ok_status_line(&head[..read]) {
        Ok(())
    } else {
        let line = String::from_utf8_lossy(&head[..read]);
        Err(format!("unhealthy: {}", line.lines().next().unwrap_or("empty answer")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_probed_on_loopback() {
        assert_eq!(loopback_for("0.0.0.0:8000".parse().unwrap()).to_string(), "127.0.0.1:8000");
        assert_eq!(loopback_for("[::]:8000".parse().unwrap()).to_string(), "[::1]:8000");
        assert_eq!(loopback_for("10.0.0.7:9".parse().unwrap()).to_string(), "10.0.0.7:9");
    }

    #[test]
    fn only_a_200_status_line_is_healthy() {
        assert!(is_ok_status_line(b"HTTP/1.1 200 OK\r\n"));
        assert!(is_ok_status_line(b"HTTP/1.0 200 OK\r\ncontent-length: 2"));
        assert!(!is_ok_status_line(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!is_ok_status_line(b"HTTP/1.1 2000 nonsense\r\n"));
        assert!(!is_ok_status_line(b"SSH-2.0-OpenSSH\r\n"));
        assert!(!is_ok_status_line(b""));
    }

    #[test]
    fn a_closed_port_fails_the_probe() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(healthcheck(addr, Duration::from_secs(2)).is_err());
    }
}

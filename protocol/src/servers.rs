//! The one form a list of NATS servers takes on every command line and in every environment
//! variable (`helium-broker --nats-url`, `helium-worker --grid`, `helium … --nats`, the Python
//! client's `url`): comma-separated URLs, spaces around a comma allowed, e.g.
//! `nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224` for a 3-node cluster.
//! The client connects to one of them and, when that node goes away, reconnects to another.
//!
//! Generic over the address type so this crate stays free of a NATS client: the binaries parse
//! into `async_nats::ServerAddr`.

use std::str::FromStr;

/// Why a server list was refused; the message names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerListError {
    #[error("no NATS server given (expected nats://host:port, or several separated by commas)")]
    Empty,
    #[error("server {position} of {list:?} is empty (a stray comma?)")]
    EmptyEntry { list: String, position: usize },
    #[error("server {position} of the list, {entry:?}, is not a NATS server address: {reason}")]
    Bad { entry: String, position: usize, reason: String },
}

/// Parses a comma-separated list of server addresses, in order, into `A`s.
///
/// ```
/// use helium_protocol::servers::server_list;
/// let urls: Vec<String> = server_list("nats://a:4222, nats://b:4222").unwrap();
/// assert_eq!(urls, ["nats://a:4222", "nats://b:4222"]);
/// ```
pub fn server_list<A>(list: &str) -> Result<Vec<A>, ServerListError>
where
    A: FromStr,
    A::Err: std::fmt::Display,
{
    if list.trim().is_empty() {
        return Err(ServerListError::Empty);
    }
    list.split(',')
        .enumerate()
        .map(|(i, entry)| {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(ServerListError::EmptyEntry { list: list.to_string(), position: i + 1 });
            }
            entry.parse::<A>().map_err(|e| ServerListError::Bad {
                entry: entry.to_string(),
                position: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::ServerAddr;

    #[test]
    fn one_url_is_a_list_of_one() {
        let servers: Vec<ServerAddr> = server_list("nats://127.0.0.1:4222").unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].port(), 4222);
    }

    #[test]
    fn a_cluster_list_keeps_its_order_and_trims_spaces() {
        let servers: Vec<ServerAddr> =
            server_list("nats://127.0.0.1:4222, nats://127.0.0.1:4223 ,tls://example.org:4224").unwrap();
        let ports: Vec<u16> = servers.iter().map(ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert!(servers[2].tls_required());
    }

    #[test]
    fn a_bad_entry_is_named_with_its_position() {
        let err = server_list::<ServerAddr>("nats://127.0.0.1:4222,http://x:1").unwrap_err();
        let ServerListError::Bad { entry, position, .. } = &err else { panic!("{err:?}") };
        assert_eq!((entry.as_str(), *position), ("http://x:1", 2));
        assert!(err.to_string().contains("http://x:1"), "{err}");
    }

    #[test]
    fn empty_lists_and_stray_commas_are_refused() {
        assert_eq!(server_list::<ServerAddr>("  ").unwrap_err(), ServerListError::Empty);
        assert!(matches!(
            server_list::<ServerAddr>("nats://a:1,,nats://b:2").unwrap_err(),
            ServerListError::EmptyEntry { position: 2, .. }
        ));
        assert!(matches!(
            server_list::<ServerAddr>("nats://a:1,").unwrap_err(),
            ServerListError::EmptyEntry { position: 2, .. }
        ));
    }
}

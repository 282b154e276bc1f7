//! A TCP proxy a test can cut: the worker's database connections go through it, so a test can
//! take Postgres away from one worker (connections reset, new ones refused) without stopping
//! the Postgres every other test uses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Debug)]
pub struct TcpProxy {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (open2, links2) = (open.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !open2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(link.abort_handle());
            }
        })
        .abort_handle();
        Self { addr, open, links, accept }
    }

    /// Drops every connection and refuses new ones, like a database that went away.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// `url` (a postgres:// URL on 127.0.0.1) rewritten to go through this proxy.
    pub fn postgres_url(&self, url: &str) -> String {
        let (server, database) = url.rsplit_once('/').unwrap();
        let (credentials_host, _port) = server.rsplit_once(':').unwrap();
        format!("{credentials_host}:{}/{database}", self.addr.port())
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The socket address of a postgres:// URL's server.
pub fn postgres_addr(url: &str) -> SocketAddr {
    let (server, _) = url.rsplit_once('/').unwrap();
    let host_port = server.rsplit_once('@').map_or(server, |(_, hp)| hp);
    let host_port = host_port.trim_start_matches("postgres://").trim_start_matches("postgresql://");
    host_port.parse().unwrap()
}

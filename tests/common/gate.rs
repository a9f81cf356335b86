//! A TCP gate in front of a server, for tests that make it "go away": open, it relays;
//! closed, it cuts every relayed connection and drops new ones.

/// The gate; `open.send(false)` closes it, `open.send(true)` opens it.
pub struct Gate {
    pub port: u16,
    pub open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    /// A gate on a free loopback port in front of `target`, open or closed to begin with.
    pub async fn start(target: std::net::SocketAddr, open_at_start: bool) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, watch) = tokio::sync::watch::channel(open_at_start);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Gate { port, open }
    }
}

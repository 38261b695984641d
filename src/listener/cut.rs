//! A stream that can be cut from outside: once [`Flag::cut`] is called,
//! reads and writes fail, so the SSH session on it ends at once whatever it
//! was waiting for. The listener cuts a TCP connection by shutting its
//! socket down; a connection forwarded by the relay is an SSH channel with
//! no socket of its own, and is cut with this.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The switch shared by the stream and whoever may cut it.
#[derive(Default)]
pub struct Flag {
    cut: AtomicBool,
    /// The reader waiting on the stream, woken by a cut.
    reader: Mutex<Option<Waker>>,
}

impl Flag {
    /// From now on the stream's reads and writes fail.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let waker = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

/// `S`, failing once its [`Flag`] is cut.
pub struct Cuttable<S> {
    inner: S,
    flag: Arc<Flag>,
}

impl<S> Cuttable<S> {
    pub fn new(inner: S) -> (Self, Arc<Flag>) {
        let flag = Arc::new(Flag::default());
        (
            Cuttable {
                inner,
                flag: flag.clone(),
            },
            flag,
        )
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection cut")
}

impl<S: AsyncRead + Unpin> AsyncRead for Cuttable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Register before looking at the flag: a cut in between then still
        // finds the waker.
        *self.flag.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        if self.flag.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cuttable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.flag.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.flag.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A read blocked on a silent peer ends when cut, and writes fail after.
    #[tokio::test]
    async fn a_cut_ends_a_blocked_read() {
        let (a, _silent_peer) = tokio::io::duplex(64);
        let (mut s, flag) = Cuttable::new(a);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let r = s.read(&mut buf).await;
            (r.map_err(|e| e.kind()), s)
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!reader.is_finished(), "the read must wait for data");
        flag.cut();
        let (r, mut s) = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.unwrap_err(), io::ErrorKind::ConnectionAborted);
        assert!(s.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn uncut_it_is_the_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut s, _flag) = Cuttable::new(a);
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        b.write_all(b"pong").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}

//! The Engine.IO transport of one Socket.IO socket, and a switch that closes it.
//!
//! socket.io-client treats the two ways a server can end a socket differently: a Socket.IO
//! DISCONNECT packet is final ("io server disconnect", no reconnect), while a closed
//! transport is a network event ("transport close") after which it reconnects by itself.
//! A socket dropped for being slow must get the second: it did nothing wrong, and the
//! client should come back. socketioxide can close one socket only with the packet (it
//! closes transports only all at once, at shutdown), so the gateway performs the WebSocket
//! upgrade itself and hands socketioxide this IO, whose [`TransportSwitch`] ends it: the
//! next read is end-of-stream and every write fails, so engineioxide closes the session
//! and drops the connection, and the client sees its transport close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Closes one socket's transport; cheap to clone, kept in the request's extensions.
#[derive(Clone, Default)]
pub struct TransportSwitch(Arc<SwitchState>);

#[derive(Default)]
struct SwitchState {
    closed: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl TransportSwitch {
    /// Ends the transport: engineioxide's reader sees end-of-stream and its writer an
    /// error, wherever they are waiting.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.reader.wake();
        self.0.writer.wake();
    }

    fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }
}

/// An upgraded connection that a [`TransportSwitch`] can close.
pub struct SwitchedIo<S> {
    inner: S,
    switch: TransportSwitch,
}

impl<S> SwitchedIo<S> {
    pub fn new(inner: S) -> (Self, TransportSwitch) {
        let switch = TransportSwitch::default();
        let io = SwitchedIo {
            inner,
            switch: switch.clone(),
        };
        (io, switch)
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "transport closed by the server")
}

impl<S: AsyncRead + Unpin> AsyncRead for SwitchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Register before checking, so a close between the two still wakes this task.
        self.switch.0.reader.register(cx.waker());
        if self.switch.is_closed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SwitchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.switch.0.writer.register(cx.waker());
        if self.switch.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.switch.0.writer.register(cx.waker());
        if self.switch.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn closing_ends_a_waiting_reader_and_fails_writes() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let (mut io, switch) = SwitchedIo::new(ours);
        theirs.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping", "data passes while open");

        let reader = tokio::spawn(async move {
            let mut rest = Vec::new();
            let n = io.read_to_end(&mut rest).await.unwrap();
            (n, io)
        });
        tokio::task::yield_now().await;
        switch.close();
        let (n, mut io) = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the waiting reader was woken")
            .unwrap();
        assert_eq!(n, 0, "end of stream");
        assert_eq!(
            io.write_all(b"x").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        drop(theirs);
    }
}

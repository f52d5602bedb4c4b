//! A connection's queue of bytes waiting for the socket.
//!
//! Frames produced during one loop turn are appended to the same buffer and leave
//! in one `writev`. A frame for many recipients (a group message) is encoded once
//! and queued by reference, never copied per recipient.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

use crate::ws::Spares;

/// An owned buffer stops taking appends at this size, so a huge echo does not
/// make the next small frame wait behind a reallocation.
const APPEND_LIMIT: usize = 256 * 1024;

/// The largest buffer [`Outbound::flush_keeping`] keeps.
const KEEP_LIMIT: usize = 512 * 1024;

/// Most chunks handed to one `writev`.
const MAX_IOVECS: usize = 64;

#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    Shared(Rc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(b) => b,
        }
    }
}

/// The outbound queue; empty queues hold no heap memory.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Boxed: an idle connection pays one word for it, not a ring's four (most
    /// connections' output goes out through the loop's lent queue and never
    /// fills their own).
    #[allow(clippy::box_collection)]
    chunks: Option<Box<VecDeque<Chunk>>>,
    /// Bytes of the front chunk already written.
    front_written: u32,
    /// Bytes in every chunk but the last, which callers may still append to: the
    /// queue's length is asked after every delivery, so it must not walk a queue
    /// of many shared frames.
    ///
    /// 32 bits keep an idle connection small: every producer is bounded far below
    /// 4 GiB (the outbound bounds, the upload and message limits).
    sealed: u32,
}

/// A length as the queue counts it.
fn len32(n: usize) -> u32 {
    debug_assert!(u32::try_from(n).is_ok(), "an outbound queue of {n} bytes");
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What a flush achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued has been written.
    All,
    /// The socket is full; wait for it to become writable.
    Blocked,
}

impl Outbound {
    /// A buffer to append frames to, at the back of the queue.
    pub fn tail(&mut self) -> &mut Vec<u8> {
        let reusable = matches!(self.back(), Some(Chunk::Owned(v)) if v.len() < APPEND_LIMIT);
        if !reusable {
            self.push(Chunk::Owned(Vec::new()));
        }
        match self.chunks.as_deref_mut().and_then(|ring| ring.back_mut()) {
            Some(Chunk::Owned(v)) => v,
            _ => unreachable!("an owned chunk was just pushed"),
        }
    }

    fn back(&self) -> Option<&Chunk> {
        self.chunks.as_deref().and_then(|ring| ring.back())
    }

    /// Queues a buffer as it is (a large payload we own), without copying it.
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        self.push(Chunk::Owned(bytes));
    }

    /// Queues an encoded frame shared with other connections.
    pub fn push_shared(&mut self, frame: Rc<[u8]>) {
        self.push(Chunk::Shared(frame));
    }

    fn push(&mut self, chunk: Chunk) {
        let ring = self.chunks.get_or_insert_with(Box::default);
        if let Some(last) = ring.back() {
            self.sealed += len32(last.bytes().len());
        }
        ring.push_back(chunk);
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        let last = self.back().map_or(0, |c| c.bytes().len());
        self.sealed as usize + last - self.front_written as usize
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the front chunk, which has been written; a large buffer of ours goes
    /// to `spares` for the next large message.
    fn pop_front(&mut self, spares: &mut Spares) {
        let Some(ring) = self.chunks.as_deref_mut() else {
            return;
        };
        if ring.len() > 1 {
            if let Some(front) = ring.front() {
                self.sealed -= len32(front.bytes().len());
            }
        }
        if let Some(Chunk::Owned(buf)) = ring.pop_front() {
            spares.give(buf);
        }
        self.front_written = 0;
    }

    /// Writes as much as the socket takes, in as few calls as it allows. An
    /// emptied queue gives its memory back: idle connections keep no heap memory.
    pub fn flush_to(
        &mut self,
        socket: &mut impl Write,
        spares: &mut Spares,
    ) -> io::Result<Flushed> {
        self.flush_inner(socket, spares, false)
    }

    /// Like [`Outbound::flush_to`], but an emptied queue keeps its ring and its
    /// last buffer (cleared) for the next appends: the loop lends such a warm
    /// queue to each connection for its read turn, so replies cost no allocation.
    pub fn flush_keeping(
        &mut self,
        socket: &mut impl Write,
        spares: &mut Spares,
    ) -> io::Result<Flushed> {
        self.flush_inner(socket, spares, true)
    }

    fn flush_inner(
        &mut self,
        socket: &mut impl Write,
        spares: &mut Spares,
        keep: bool,
    ) -> io::Result<Flushed> {
        loop {
            while let Some(ring) = self.chunks.as_deref_mut() {
                let only = ring.len() == 1;
                let Some(front) = ring.front_mut() else {
                    break;
                };
                if front.bytes().len() != self.front_written as usize {
                    break;
                }
                if keep && only {
                    // A large payload buffer goes to the spares instead: kept here it
                    // would be lent, half used, to every connection.
                    if let Chunk::Owned(v) = front {
                        if v.capacity() <= KEEP_LIMIT {
                            v.clear();
                            self.front_written = 0;
                            return Ok(Flushed::All);
                        }
                    }
                }
                self.pop_front(spares);
            }
            let Some(ring) = self.chunks.as_deref().filter(|r| !r.is_empty()) else {
                if !keep {
                    self.chunks = None;
                }
                return Ok(Flushed::All);
            };
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, chunk) in ring.iter().take(MAX_IOVECS).enumerate() {
                let bytes = chunk.bytes();
                slices[i] = IoSlice::new(if i == 0 {
                    &bytes[self.front_written as usize..]
                } else {
                    bytes
                });
                count += 1;
            }
            match socket.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consume(n, spares),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn consume(&mut self, mut n: usize, spares: &mut Spares) {
        while n > 0 {
            let Some(ring) = self.chunks.as_deref() else {
                return;
            };
            let Some(front) = ring.front() else {
                return;
            };
            let left = front.bytes().len() - self.front_written as usize;
            // The last chunk stays, written: the flush loop decides whether it is
            // dropped or kept for reuse.
            if n < left || ring.len() == 1 {
                self.front_written += len32(n);
                return;
            }
            n -= left;
            self.pop_front(spares);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `cap` bytes per call, then blocks after `budget`.
    struct Trickle {
        written: Vec<u8>,
        cap: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.cap).min(self.budget);
            self.written.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn naive_len(q: &Outbound) -> usize {
        q.chunks
            .iter()
            .flat_map(|ring| ring.iter())
            .map(|c| c.bytes().len())
            .sum::<usize>()
            - q.front_written as usize
    }

    #[test]
    fn the_count_follows_appends_pushes_and_partial_writes() {
        let mut q = Outbound::default();
        let mut sock = Trickle {
            written: Vec::new(),
            cap: 7,
            budget: 0,
        };
        for round in 0..50usize {
            match round % 3 {
                0 => q.tail().extend_from_slice(&vec![1; round]),
                1 => q.push_shared(Rc::from(vec![2; round])),
                _ => q.push_owned(vec![3; round * 10]),
            }
            q.tail().push(4);
            assert_eq!(q.len(), naive_len(&q), "round {round}");
            sock.budget = round * 5;
            q.flush_to(&mut sock, &mut Spares::default())
                .expect("no error");
            assert_eq!(
                q.len(),
                naive_len(&q),
                "round {round} after a partial write"
            );
        }
        sock.budget = usize::MAX;
        q.flush_to(&mut sock, &mut Spares::default())
            .expect("no error");
        assert_eq!((q.len(), q.sealed), (0, 0));
    }

    #[test]
    fn a_kept_queue_reuses_its_buffer_and_a_flushed_one_frees_it() {
        let mut q = Outbound::default();
        let mut sock = Trickle {
            written: Vec::new(),
            cap: usize::MAX,
            budget: usize::MAX,
        };
        q.tail().extend_from_slice(&[7; 3000]);
        q.push_shared(Rc::from(&b"shared"[..]));
        q.tail().extend_from_slice(b"end");
        assert_eq!(
            q.flush_keeping(&mut sock, &mut Spares::default())
                .expect("no error"),
            Flushed::All
        );
        assert!(q.is_empty());
        assert_eq!(
            q.chunks.as_ref().map(|r| r.len()),
            Some(1),
            "the last buffer stays"
        );
        let buffer = q.tail().as_ptr();
        let capacity = q.tail().capacity();
        assert!(capacity >= 3, "{capacity}");
        // The next turn appends into the same allocation.
        q.tail().extend_from_slice(b"again");
        assert_eq!(q.tail().as_ptr(), buffer);
        assert_eq!(q.len(), 5);
        assert_eq!(
            q.flush_keeping(&mut sock, &mut Spares::default())
                .expect("no error"),
            Flushed::All
        );
        assert_eq!((q.len(), q.sealed, q.front_written), (0, 0, 0));
        // A connection's own queue gives everything back.
        q.tail().extend_from_slice(b"last");
        assert_eq!(
            q.flush_to(&mut sock, &mut Spares::default())
                .expect("no error"),
            Flushed::All
        );
        assert!(q.chunks.is_none());
        assert_eq!(sock.written.len(), 3000 + 6 + 3 + 5 + 4);
        // A huge buffer is not kept whole.
        q.tail().extend_from_slice(&vec![1; 2 * KEEP_LIMIT]);
        q.flush_keeping(&mut sock, &mut Spares::default())
            .expect("no error");
        assert!(q.tail().capacity() <= KEEP_LIMIT);
    }

    #[test]
    fn partial_writes_keep_order_and_count() {
        let mut q = Outbound::default();
        q.tail().extend_from_slice(b"hello ");
        q.push_shared(Rc::from(&b"shared "[..]));
        q.tail().extend_from_slice(b"world");
        assert_eq!(q.len(), 18);
        assert_eq!(q.len(), naive_len(&q));
        let mut sock = Trickle {
            written: Vec::new(),
            cap: 4,
            budget: 10,
        };
        assert_eq!(
            q.flush_to(&mut sock, &mut Spares::default())
                .expect("no error"),
            Flushed::Blocked
        );
        assert_eq!(q.len(), 8);
        assert_eq!(q.len(), naive_len(&q));
        sock.budget = 100;
        assert_eq!(
            q.flush_to(&mut sock, &mut Spares::default())
                .expect("no error"),
            Flushed::All
        );
        assert_eq!(sock.written, b"hello shared world");
        assert!(q.is_empty());
        assert!(q.chunks.is_none());
    }
}

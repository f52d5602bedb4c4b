//! Large message buffers kept between messages by the code that owns many
//! connections (see [`super::Codec`]).
//!
//! A 1 MiB echo gathers its payload in the connection's buffer, which then goes
//! out behind its frame header without a copy. Freed after the write and
//! allocated again for the next message, such a buffer costs the allocator a
//! map or a trim and the kernel a page fault per 4 KiB touched, every time, and
//! the speed of large messages comes to depend on what the process did before.
//! Kept here once written and handed to the next connection that gathers a large
//! payload, it costs nothing. Bounded in count and bytes, and emptied when
//! nobody asked for one since the last [`Spares::trim`].

/// Buffers smaller than this are not worth keeping.
pub const SPARE_MIN: usize = 64 * 1024;

/// Most buffers kept.
const MAX_COUNT: usize = 64;

/// Most bytes (capacity) kept in all.
const MAX_BYTES: usize = 64 * 1024 * 1024;

/// The size of the fixed I/O buffers kept ([`Spares::take_io`]).
pub const IO_BUFFER: usize = 64 * 1024;

/// Most I/O buffers kept: a turn lends one or two at a time.
const MAX_IO: usize = 8;

/// The pool; empty, it holds no heap memory.
#[derive(Debug, Default)]
pub struct Spares {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
    /// A buffer was taken since the last trim.
    used: bool,
    /// Fixed I/O buffers of [`IO_BUFFER`] bytes (a TLS layer's record buffers),
    /// kept whole: their bytes stay initialized, so lending one costs no zeroing.
    io: Vec<Box<[u8]>>,
}

impl Spares {
    /// Keeps `buf` (cleared) if it is large and there is room; drops it otherwise.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity >= SPARE_MIN
            && self.bufs.len() < MAX_COUNT
            && self.bytes + capacity <= MAX_BYTES
        {
            buf.clear();
            self.bytes += capacity;
            self.bufs.push(buf);
        }
    }

    /// The largest buffer kept, empty, if it holds more than `capacity` bytes.
    pub fn take_larger_than(&mut self, capacity: usize) -> Option<Vec<u8>> {
        let (i, _) = self
            .bufs
            .iter()
            .enumerate()
            .max_by_key(|(_, b)| b.capacity())
            .filter(|(_, b)| b.capacity() > capacity)?;
        let buf = self.bufs.swap_remove(i);
        self.bytes -= buf.capacity();
        self.used = true;
        Some(buf)
    }

    /// Bytes kept (the buffers' capacity).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// An I/O buffer of [`IO_BUFFER`] bytes (old contents), kept or new.
    pub fn take_io(&mut self) -> Box<[u8]> {
        self.used = true;
        self.io
            .pop()
            .unwrap_or_else(|| vec![0; IO_BUFFER].into_boxed_slice())
    }

    /// Keeps an I/O buffer for the next [`Spares::take_io`] if it is of the size
    /// and there is room; drops it otherwise.
    pub fn give_io(&mut self, buf: Box<[u8]>) {
        if buf.len() == IO_BUFFER && self.io.len() < MAX_IO {
            self.io.push(buf);
        }
    }

    /// Frees everything if no buffer was taken since the last call: the owner
    /// calls it now and then, so a burst of large messages leaves no memory behind.
    pub fn trim(&mut self) {
        if !self.used {
            *self = Spares::default();
        }
        self.used = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_large_buffers_within_its_bounds_and_trims_when_unused() {
        let mut s = Spares::default();
        s.give(Vec::with_capacity(1024));
        assert_eq!(s.bytes(), 0, "small buffers are dropped");
        let mut big = Vec::with_capacity(1 << 20);
        big.extend_from_slice(b"old bytes");
        s.give(big);
        s.give(Vec::with_capacity(100_000));
        assert!(
            s.take_larger_than(2 << 20).is_none(),
            "none is large enough"
        );
        let taken = s.take_larger_than(0).expect("kept");
        assert!(
            taken.is_empty() && taken.capacity() >= 1 << 20,
            "the largest first"
        );
        assert!(s.take_larger_than(100_000).is_none());
        assert!(s.take_larger_than(99_999).is_some());
        for _ in 0..40 {
            s.give(Vec::with_capacity(1 << 20));
        }
        assert!(s.bufs.len() <= MAX_COUNT && s.bytes() <= MAX_BYTES);
        s.give(taken);
        assert!(s.bytes() <= MAX_BYTES);
        // Taken from since the last trim: kept.
        s.trim();
        assert!(s.bytes() > 0);
        // Not taken from since: freed.
        s.trim();
        assert_eq!((s.bytes(), s.bufs.capacity()), (0, 0));
    }

    #[test]
    fn keeps_a_few_io_buffers_of_the_size() {
        let mut s = Spares::default();
        let mut a = s.take_io();
        assert_eq!(a.len(), IO_BUFFER);
        a[0] = 7;
        s.give_io(a);
        s.give_io(vec![0; 100].into_boxed_slice());
        assert_eq!(s.io.len(), 1, "only buffers of the size are kept");
        assert_eq!(
            s.take_io()[0],
            7,
            "the kept buffer is lent again, not zeroed"
        );
        for _ in 0..20 {
            s.give_io(vec![0; IO_BUFFER].into_boxed_slice());
        }
        assert_eq!(s.io.len(), MAX_IO);
        s.trim();
        s.trim();
        assert!(s.io.is_empty() && s.io.capacity() == 0);
    }
}

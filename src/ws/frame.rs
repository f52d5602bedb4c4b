//! Frame headers: decoding from a possibly partial buffer, and encoding (RFC 6455 §5.2).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use super::error::ProtocolError;
use super::mask::apply_mask;

/// The longest header: 2 bytes, a 64-bit length and a masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload of a control frame (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The frame types of §5.2 (reserved opcodes are rejected while decoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: first frame of a UTF-8 text message.
    Text = 0x1,
    /// 0x2: first frame of a binary message.
    Binary = 0x2,
    /// 0x8: starts or answers the closing handshake.
    Close = 0x8,
    /// 0x9: asks the peer for a pong.
    Ping = 0x9,
    /// 0xA: answers a ping, or a unidirectional heartbeat.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode of a 4-bit value, `None` for the reserved ones.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Control frames have the high bit of the opcode set (§5.5).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1-3 as the low three bits.
    pub rsv: u8,
    /// Frame type.
    pub opcode: OpCode,
    /// The masking key, present on every frame a client sends.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

/// Decodes a frame header from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of the header (nothing is consumed;
/// call again with more bytes), or the header and its length in bytes. Errors that
/// the bytes seen so far already prove are reported at once, before the rest of
/// the header arrives. Role rules (masking, RSV without extensions) are left to
/// the caller.
pub fn decode_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x7;
    let opcode = OpCode::from_bits(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0f))?;
    if opcode.is_control() && !fin {
        return Err(ProtocolError::FragmentedControlFrame);
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    if opcode.is_control() && usize::from(b1 & 0x7f) > MAX_CONTROL_PAYLOAD {
        // An extended length is already too long for a control frame.
        return Err(ProtocolError::ControlFrameTooLong);
    }
    let (payload_len, mut len) = match b1 & 0x7f {
        126 => {
            let Some(ext) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
        }
        127 => {
            let Some(ext) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(ext);
            let n = u64::from_be_bytes(be);
            if n >> 63 != 0 {
                return Err(ProtocolError::LengthOverflow);
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(key) = buf.get(len..len + 4) else {
            return Ok(None);
        };
        len += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        },
        len,
    )))
}

/// Encodes a header into `dst` and returns its length.
///
/// Lengths use the shortest form, as §5.2 requires ("the minimal number of bytes
/// MUST be used").
pub fn encode_header(
    dst: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    dst[0] = (u8::from(fin) << 7) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut len = match payload_len {
        0..=125 => {
            dst[1] = mask_bit | payload_len as u8;
            2
        }
        126..=0xffff => {
            dst[1] = mask_bit | 126;
            dst[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            dst[1] = mask_bit | 127;
            dst[2..10].copy_from_slice(&payload_len.to_be_bytes());
            10
        }
    };
    if let Some(key) = mask {
        dst[len..len + 4].copy_from_slice(&key);
        len += 4;
    }
    len
}

/// Appends an unmasked, final frame to `out`: how a server sends.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, payload.len() as u64, None);
    out.reserve(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// Appends a masked frame to `out`: how a client sends.
pub fn write_masked_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    key: [u8; 4],
) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, fin, opcode, payload.len() as u64, Some(key));
    out.reserve(n + payload.len());
    out.extend_from_slice(&header[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(buf: &[u8]) -> (FrameHeader, usize) {
        decode_header(buf)
            .expect("valid header")
            .expect("complete header")
    }

    // RFC 6455 §5.7 examples.
    #[test]
    fn rfc_single_frame_unmasked_hello() {
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = decode_all(&bytes);
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, OpCode::Text, None, 5, 2)
        );
        let mut out = Vec::new();
        write_frame(&mut out, OpCode::Text, b"Hello");
        assert_eq!(out, bytes);
    }

    #[test]
    fn rfc_single_frame_masked_hello() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode_all(&bytes);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!((h.payload_len, n), (5, 6));
        let mut out = Vec::new();
        write_masked_frame(
            &mut out,
            true,
            OpCode::Text,
            b"Hello",
            [0x37, 0xfa, 0x21, 0x3d],
        );
        assert_eq!(out, bytes);
    }

    #[test]
    fn rfc_fragmented_unmasked_hello() {
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let second = [0x80, 0x02, 0x6c, 0x6f];
        let (h1, _) = decode_all(&first);
        let (h2, _) = decode_all(&second);
        assert_eq!((h1.fin, h1.opcode), (false, OpCode::Text));
        assert_eq!((h2.fin, h2.opcode), (true, OpCode::Continuation));
    }

    #[test]
    fn rfc_ping_and_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(decode_all(&ping).0.opcode, OpCode::Ping);
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(decode_all(&pong).0.opcode, OpCode::Pong);
    }

    #[test]
    fn rfc_256_bytes_and_64_kib_binary() {
        assert_eq!(decode_all(&[0x82, 0x7e, 0x01, 0x00]).0.payload_len, 256);
        let big = [0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0, 0];
        assert_eq!(decode_all(&big), (decode_all(&big).0, 10));
        assert_eq!(decode_all(&big).0.payload_len, 65536);
    }

    #[test]
    fn every_length_form_round_trips() {
        for (len, header_len) in [
            (0u64, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (1 << 40, 10),
        ] {
            let mut buf = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut buf, true, OpCode::Binary, len, None);
            assert_eq!(n, header_len, "length {len}");
            let (h, m) = decode_all(&buf[..n]);
            assert_eq!((h.payload_len, m), (len, n));
            let n = encode_header(&mut buf, false, OpCode::Binary, len, Some([9, 8, 7, 6]));
            assert_eq!(n, header_len + 4);
            assert_eq!(decode_all(&buf[..n]).0.mask, Some([9, 8, 7, 6]));
        }
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut buf, true, OpCode::Binary, 70000, Some([1, 2, 3, 4]));
        for cut in 0..n {
            assert_eq!(decode_header(&buf[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn violations() {
        assert_eq!(
            decode_header(&[0x83]),
            Err(ProtocolError::ReservedOpcode(3))
        );
        assert_eq!(
            decode_header(&[0x8b, 0x80]),
            Err(ProtocolError::ReservedOpcode(0xb))
        );
        assert_eq!(
            decode_header(&[0x09]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            decode_header(&[0x89, 0xfe]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert_eq!(
            decode_header(&[0x89, 0x7e, 0, 126]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        let top_bit = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_header(&top_bit), Err(ProtocolError::LengthOverflow));
        // RSV bits decode; the connection rejects them (no extension is ever negotiated).
        assert_eq!(decode_all(&[0xc1, 0x80, 0, 0, 0, 0]).0.rsv, 0b100);
    }

    proptest! {
        #[test]
        fn header_round_trip(fin in any::<bool>(), op in prop::sample::select(vec![OpCode::Continuation, OpCode::Text, OpCode::Binary]), len in any::<u64>().prop_map(|n| n >> 1), mask in any::<Option<[u8; 4]>>()) {
            let mut buf = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut buf, fin, op, len, mask);
            let expected = FrameHeader { fin, rsv: 0, opcode: op, mask, payload_len: len };
            prop_assert_eq!(decode_header(&buf[..n]), Ok(Some((expected, n))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = decode_header(&bytes);
        }
    }
}

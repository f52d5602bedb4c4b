//! Close codes and close-frame payloads (RFC 6455 §5.5.1, §7.4).

use super::error::ProtocolError;

/// A close status code as carried in the first two bytes of a close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going down (shutdown) or the client navigates away.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a message of a type this endpoint does not accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: a text message or close reason that is not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message that violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a frame or message over the endpoint's size limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether a peer may send this code in a close frame.
    ///
    /// RFC 6455 §7.4.1 defines 1000-1003 and 1007-1011; the IANA registry adds
    /// 1012-1014. 1004 is reserved, and 1005, 1006 and 1015 "MUST NOT be set as a
    /// status code in a Close control frame". 1016-2999 are reserved for future
    /// protocol use, 3000-4999 belong to libraries and applications, anything
    /// else is out of range.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// A received close frame, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code, or `None` for an empty close payload.
    pub code: Option<CloseCode>,
    /// The reason text (empty when absent).
    pub reason: &'a str,
}

/// Parses and validates the (unmasked) payload of a received close frame.
pub fn parse_close_payload(payload: &[u8]) -> Result<CloseFrame<'_>, ProtocolError> {
    match payload {
        [] => Ok(CloseFrame {
            code: None,
            reason: "",
        }),
        // RFC 6455 §5.5.1: if there is a body, its first two bytes are the code.
        [_] => Err(ProtocolError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(CloseFrame {
                code: Some(code),
                reason,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_class() {
        let cases: &[(u16, bool)] = &[
            (0, false),
            (999, false),
            (1000, true),
            (1001, true),
            (1002, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1007, true),
            (1011, true),
            (1012, true),
            (1014, true),
            (1015, false),
            (1016, false),
            (2000, false),
            (2999, false),
            (3000, true),
            (3999, true),
            (4000, true),
            (4999, true),
            (5000, false),
            (65535, false),
        ];
        for &(code, ok) in cases {
            let payload = code.to_be_bytes();
            let parsed = parse_close_payload(&payload);
            assert_eq!(parsed.is_ok(), ok, "code {code}");
            if !ok {
                assert_eq!(parsed, Err(ProtocolError::InvalidCloseCode(code)));
            }
        }
    }

    #[test]
    fn empty_and_short_payloads() {
        assert_eq!(parse_close_payload(&[]).map(|c| c.code), Ok(None));
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(ProtocolError::CloseTooShort)
        );
    }

    #[test]
    fn reason_must_be_utf8() {
        let ok = [0x03, 0xe8, b'b', b'y', b'e'];
        assert_eq!(parse_close_payload(&ok).map(|c| c.reason), Ok("bye"));
        let bad = [0x03, 0xe8, 0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xed, 0xa0, 0x80];
        assert_eq!(parse_close_payload(&bad), Err(ProtocolError::InvalidUtf8));
    }
}

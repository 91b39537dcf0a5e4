//! The protobuf wire format (protobuf.dev/programming-guides/encoding): a reader over one
//! message's bytes that yields field keys and values and never reads past the end.

/// A malformed byte sequence; the caller adds which field it was reading.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated varint at byte {offset}")]
    TruncatedVarint { offset: usize },
    #[error("varint longer than 10 bytes at byte {offset}")]
    OverlongVarint { offset: usize },
    #[error(
        "length {length} at byte {offset} runs past the end of the message ({remaining} bytes left)"
    )]
    Length {
        offset: usize,
        length: u64,
        remaining: usize,
    },
    #[error("truncated {width}-byte fixed value at byte {offset}")]
    TruncatedFixed { offset: usize, width: usize },
    #[error("field number 0 at byte {offset}")]
    ZeroTag { offset: usize },
    #[error("field number {tag} at byte {offset} is above the protobuf maximum")]
    TagTooLarge { offset: usize, tag: u64 },
    #[error(
        "wire type {wire_type} at byte {offset} is not supported (groups are not used by Kubernetes)"
    )]
    UnsupportedWireType { offset: usize, wire_type: u8 },
}

/// The encoding of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    LengthDelimited,
    Fixed32,
}

impl std::fmt::Display for WireType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireType::Varint => "varint",
            WireType::Fixed64 => "64-bit",
            WireType::LengthDelimited => "length-delimited",
            WireType::Fixed32 => "32-bit",
        })
    }
}

pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub(super) fn varint(&mut self) -> Result<u64, WireError> {
        let offset = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(WireError::TruncatedVarint { offset });
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::OverlongVarint { offset })
    }

    /// The next field's number and wire type.
    pub(super) fn key(&mut self) -> Result<(u32, WireType), WireError> {
        let offset = self.pos;
        let key = self.varint()?;
        let wire_type = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::LengthDelimited,
            5 => WireType::Fixed32,
            other => {
                return Err(WireError::UnsupportedWireType {
                    offset,
                    wire_type: other as u8,
                });
            }
        };
        let tag = key >> 3;
        if tag == 0 {
            return Err(WireError::ZeroTag { offset });
        }
        // Field numbers are at most 2^29 - 1.
        let tag = u32::try_from(tag)
            .ok()
            .filter(|t| *t < 1 << 29)
            .ok_or(WireError::TagTooLarge { offset, tag })?;
        Ok((tag, wire_type))
    }

    pub(super) fn length_delimited(&mut self) -> Result<&'a [u8], WireError> {
        let offset = self.pos;
        let length = self.varint()?;
        let remaining = self.bytes.len() - self.pos;
        let end = usize::try_from(length)
            .ok()
            .filter(|l| *l <= remaining)
            .map(|l| self.pos + l)
            .ok_or(WireError::Length {
                offset,
                length,
                remaining,
            })?;
        let value = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(value)
    }

    pub(super) fn fixed64(&mut self) -> Result<[u8; 8], WireError> {
        let offset = self.pos;
        let value = self
            .bytes
            .get(self.pos..self.pos + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or(WireError::TruncatedFixed { offset, width: 8 })?;
        self.pos += 8;
        Ok(value)
    }

    fn fixed32(&mut self) -> Result<[u8; 4], WireError> {
        let offset = self.pos;
        let value = self
            .bytes
            .get(self.pos..self.pos + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or(WireError::TruncatedFixed { offset, width: 4 })?;
        self.pos += 4;
        Ok(value)
    }

    /// Steps over a value of a field this decoder does not know (protobuf forward
    /// compatibility: a newer client may send fields an older table lacks).
    pub(super) fn skip(&mut self, wire_type: WireType) -> Result<(), WireError> {
        match wire_type {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.fixed64().map(drop),
            WireType::LengthDelimited => self.length_delimited().map(drop),
            WireType::Fixed32 => self.fixed32().map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(Reader::new(&[0x96, 0x01]).varint(), Ok(150));
        assert_eq!(
            Reader::new(&[0xff; 10]).varint(),
            Err(WireError::OverlongVarint { offset: 0 })
        );
        assert_eq!(
            Reader::new(&[0x80]).varint(),
            Err(WireError::TruncatedVarint { offset: 0 })
        );
        // -1 as int64: ten bytes, sign-extended.
        let mut minus_one = vec![0xff; 9];
        minus_one.push(0x01);
        assert_eq!(Reader::new(&minus_one).varint().map(|v| v as i64), Ok(-1));
    }

    #[test]
    fn keys_and_lengths() {
        let mut r = Reader::new(&[0x0a, 0x02, b'h', b'i', 0x10, 0x01]);
        assert_eq!(r.key(), Ok((1, WireType::LengthDelimited)));
        assert_eq!(r.length_delimited(), Ok(&b"hi"[..]));
        assert_eq!(r.key(), Ok((2, WireType::Varint)));
        assert_eq!(r.varint(), Ok(1));
        assert!(r.is_empty());

        assert_eq!(
            Reader::new(&[0x05, 0x00]).length_delimited(),
            Err(WireError::Length {
                offset: 0,
                length: 5,
                remaining: 1
            })
        );
        assert_eq!(
            Reader::new(&[0x03]).key(),
            Err(WireError::UnsupportedWireType {
                offset: 0,
                wire_type: 3
            })
        );
        assert_eq!(
            Reader::new(&[0x00]).key(),
            Err(WireError::ZeroTag { offset: 0 })
        );
    }
}

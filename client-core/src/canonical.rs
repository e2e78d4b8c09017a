//! Strict protobuf decoding for what is signed, pasted or published:
//! invite codes, contact cards, directory entries and rosters.
//!
//! protobuf accepts many encodings of one value: fields in any order or
//! repeated, unknown fields, default values written out, long varints. For
//! these structures that meant one card, invite or roster had many byte
//! forms, and only some of them were what was signed. Accepting only the
//! encoding this code produces makes every accepted value re-encode to the
//! bytes it came from (the fuzz targets check it) and leaves no
//! malleability to reason about. Honest encoders (prost) always produce it.

use sotto_proto::Message;

/// Decodes `bytes` as `M` if they are exactly `M`'s canonical encoding.
pub(crate) fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    (message.encoded_len() == bytes.len() && message.encode_to_vec() == bytes).then_some(message)
}

#[cfg(test)]
mod tests {
    use sotto_proto::client::Roster;

    use super::*;

    #[test]
    fn only_the_canonical_encoding_is_accepted() {
        let roster = Roster {
            version: 3,
            handles: vec!["ann".into(), "bob".into()],
            ..Roster::default()
        };
        let bytes = roster.encode_to_vec();
        assert_eq!(decode::<Roster>(&bytes), Some(roster));
        // An unknown field (13, varint 1) appended.
        assert_eq!(
            decode::<Roster>(&[bytes.as_slice(), &[0x68, 1]].concat()),
            None
        );
        // The version written twice (the last one wins in plain protobuf).
        assert_eq!(
            decode::<Roster>(&[&[0x08, 9], bytes.as_slice()].concat()),
            None
        );
        // A default value written out.
        assert_eq!(decode::<Roster>(&[0x08, 0]), None);
        // A varint padded with a continuation byte.
        assert_eq!(decode::<Roster>(&[0x08, 0x83, 0x00]), None);
        assert_eq!(
            decode::<Roster>(&[0x08, 0x03]),
            Some(Roster {
                version: 3,
                ..Roster::default()
            })
        );
    }
}

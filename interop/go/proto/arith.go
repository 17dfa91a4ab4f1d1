// Package proto holds the Go side of proto/arith.proto.
//
// The messages are implemented by hand with google.golang.org/protobuf's
// protowire package so that building the harness never needs protoc. They
// implement the gogo/protobuf Marshaler/Unmarshaler interfaces
// (Marshal() ([]byte, error) / Unmarshal([]byte) error), which is the first
// thing rpcx's codec.PBCodec checks for, so rpcx uses them for
// SerializeType ProtoBuffer. The produced bytes are standard proto3 wire
// format (verified against dynamicpb in arith_test.go).
package proto

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// ProtoArgs mirrors `message ProtoArgs { int64 A = 1; int64 B = 2; }`.
type ProtoArgs struct {
	A int64
	B int64
}

// ProtoReply mirrors `message ProtoReply { int64 C = 1; }`.
type ProtoReply struct {
	C int64
}

// appendInt64 appends a proto3 int64 field (omitted when zero).
func appendInt64(b []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// decodeInt64Fields parses b and calls set for every varint field; fields
// with other wire types (unknown fields) are skipped like protobuf-go does.
func decodeInt64Fields(b []byte, set func(num protowire.Number, v int64)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("proto: bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return fmt.Errorf("proto: bad varint for field %d: %w", num, protowire.ParseError(m))
			}
			set(num, int64(v))
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return fmt.Errorf("proto: bad value for field %d: %w", num, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return nil
}

// Marshal encodes m in protobuf wire format.
func (m *ProtoArgs) Marshal() ([]byte, error) {
	var b []byte
	b = appendInt64(b, 1, m.A)
	b = appendInt64(b, 2, m.B)
	return b, nil
}

// Unmarshal decodes protobuf wire format into m (proto3 merge semantics on a
// zeroed message: m is reset first).
func (m *ProtoArgs) Unmarshal(b []byte) error {
	*m = ProtoArgs{}
	return decodeInt64Fields(b, func(num protowire.Number, v int64) {
		switch num {
		case 1:
			m.A = v
		case 2:
			m.B = v
		}
	})
}

// Marshal encodes m in protobuf wire format.
func (m *ProtoReply) Marshal() ([]byte, error) {
	return appendInt64(nil, 1, m.C), nil
}

// Unmarshal decodes protobuf wire format into m.
func (m *ProtoReply) Unmarshal(b []byte) error {
	*m = ProtoReply{}
	return decodeInt64Fields(b, func(num protowire.Number, v int64) {
		if num == 1 {
			m.C = v
		}
	})
}

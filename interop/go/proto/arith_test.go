package proto

import (
	"bytes"
	"encoding/hex"
	"testing"

	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// descriptors builds arith.proto's descriptors at runtime (no protoc).
func descriptors(t *testing.T) (args, reply protoreflect.MessageDescriptor) {
	t.Helper()
	i64 := descriptorpb.FieldDescriptorProto_TYPE_INT64.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	field := func(name string, num int32) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{
			Name: gproto.String(name), JsonName: gproto.String(name),
			Number: gproto.Int32(num), Type: i64, Label: opt,
		}
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    gproto.String("arith.proto"),
		Package: gproto.String("rpcxinterop"),
		Syntax:  gproto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: gproto.String("ProtoArgs"), Field: []*descriptorpb.FieldDescriptorProto{field("A", 1), field("B", 2)}},
			{Name: gproto.String("ProtoReply"), Field: []*descriptorpb.FieldDescriptorProto{field("C", 1)}},
		},
	}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("ProtoArgs"), fd.Messages().ByName("ProtoReply")
}

func TestVectors(t *testing.T) {
	cases := []struct {
		m   interface{ Marshal() ([]byte, error) }
		hex string
	}{
		{&ProtoArgs{A: 10, B: 20}, "080a1014"},
		{&ProtoReply{C: 200}, "08c801"},
		{&ProtoArgs{}, ""},
		{&ProtoArgs{A: -1}, "08ffffffffffffffffff01"},
	}
	for _, c := range cases {
		b, _ := c.m.Marshal()
		if got := hex.EncodeToString(b); got != c.hex {
			t.Errorf("%+v: got %s want %s", c.m, got, c.hex)
		}
	}
}

func TestAgainstProtobufGo(t *testing.T) {
	argsD, replyD := descriptors(t)
	for _, v := range [][2]int64{{10, 20}, {0, 0}, {-5, 1 << 40}, {-1 << 63, 1<<63 - 1}} {
		dm := dynamicpb.NewMessage(argsD)
		dm.Set(argsD.Fields().ByName("A"), protoreflect.ValueOfInt64(v[0]))
		dm.Set(argsD.Fields().ByName("B"), protoreflect.ValueOfInt64(v[1]))
		want, err := gproto.MarshalOptions{Deterministic: true}.Marshal(dm)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := (&ProtoArgs{A: v[0], B: v[1]}).Marshal()
		if !bytes.Equal(got, want) {
			t.Errorf("args %v: got %x want %x", v, got, want)
		}
		var back ProtoArgs
		if err := back.Unmarshal(want); err != nil || back.A != v[0] || back.B != v[1] {
			t.Errorf("args %v: unmarshal got %+v err %v", v, back, err)
		}

		rm := dynamicpb.NewMessage(replyD)
		rm.Set(replyD.Fields().ByName("C"), protoreflect.ValueOfInt64(v[0]))
		want, _ = gproto.Marshal(rm)
		got, _ = (&ProtoReply{C: v[0]}).Marshal()
		if !bytes.Equal(got, want) {
			t.Errorf("reply %v: got %x want %x", v[0], got, want)
		}
	}
}

func TestUnknownFieldsSkipped(t *testing.T) {
	// field 3 (string "x"), field 1 = 7, field 9 fixed32, field 2 = 3
	b, _ := hex.DecodeString("1a0178" + "0807" + "4d01020304" + "1003")
	var m ProtoArgs
	if err := m.Unmarshal(b); err != nil || m.A != 7 || m.B != 3 {
		t.Fatalf("got %+v err %v", m, err)
	}
	if err := m.Unmarshal([]byte{0x08}); err == nil {
		t.Fatal("truncated input must fail")
	}
}

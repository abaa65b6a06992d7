// Package genericsource is the client of Argo Events' generic event source protocol: the gRPC
// service generic.Eventing of generic.proto (Argo Events v1.9.11, Apache-2.0, copied next to
// this file). The client sends an EventSource (the event's name and configuration) and the
// server answers with a stream of Events.
//
// There is no protoc here, so nothing is generated: the file's descriptor is written out below
// and the messages are dynamicpb messages built from it, which gRPC's proto codec encodes as it
// encodes generated code (as package trigger/customtrigger does for the custom trigger).
package genericsource

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// StartEventSourceMethod is the full method name of generic.Eventing's only method, byte for
// byte as Argo's generated client calls it.
const StartEventSourceMethod = "/generic.Eventing/StartEventSource"

// streamDesc describes StartEventSource: one request, a stream of answers.
var streamDesc = &grpc.StreamDesc{StreamName: "StartEventSource", ServerStreams: true}

// file is the descriptor of generic.proto. It is not registered globally, so it cannot clash
// with another copy of the file linked into the same binary.
var file = func() protoreflect.FileDescriptor {
	field := func(name string, number int32, typ descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), JsonName: proto.String(name), Number: proto.Int32(number),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: typ.Enum(),
		}
	}
	message := func(name string, fields ...*descriptorpb.FieldDescriptorProto) *descriptorpb.DescriptorProto {
		return &descriptorpb.DescriptorProto{Name: proto.String(name), Field: fields}
	}
	const bytes, str = descriptorpb.FieldDescriptorProto_TYPE_BYTES, descriptorpb.FieldDescriptorProto_TYPE_STRING
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("generic.proto"), Package: proto.String("generic"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			message("EventSource", field("name", 1, str), field("config", 2, bytes)),
			message("Event", field("name", 1, str), field("payload", 2, bytes)),
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Eventing"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name: proto.String("StartEventSource"), InputType: proto.String(".generic.EventSource"),
				OutputType: proto.String(".generic.Event"), ServerStreaming: proto.Bool(true),
			}},
		}},
	}, nil)
	if err != nil {
		panic("genericsource: generic.proto descriptor: " + err.Error())
	}
	return fd
}()

func newMsg(name protoreflect.Name) *dynamicpb.Message {
	return dynamicpb.NewMessage(file.Messages().ByName(name))
}

func fieldOf(m *dynamicpb.Message, name protoreflect.Name) protoreflect.FieldDescriptor {
	return m.Descriptor().Fields().ByName(name)
}

// Event is one event the server streamed.
type Event struct {
	// Name is what the server put in Event.name; Argo ignores it.
	Name    string
	Payload []byte
}

// Client calls a generic.Eventing server.
type Client struct{ cc grpc.ClientConnInterface }

// NewClient returns a client that calls through cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

// Stream is the server's stream of events; ending the context given to StartEventSource ends it.
type Stream struct{ cs grpc.ClientStream }

// StartEventSource sends the EventSource message (name and config) and returns the stream of
// events the server answers with.
func (c *Client) StartEventSource(ctx context.Context, name string, config []byte, opts ...grpc.CallOption) (*Stream, error) {
	cs, err := c.cc.NewStream(ctx, streamDesc, StartEventSourceMethod, opts...)
	if err != nil {
		return nil, err
	}
	req := newMsg("EventSource")
	if name != "" { // proto3: an empty field is not sent
		req.Set(fieldOf(req, "name"), protoreflect.ValueOfString(name))
	}
	if len(config) > 0 {
		req.Set(fieldOf(req, "config"), protoreflect.ValueOfBytes(config))
	}
	if err := cs.SendMsg(req); err != nil {
		if errors.Is(err, io.EOF) { // the stream ended: its status says why
			if rerr := cs.RecvMsg(newMsg("Event")); rerr != nil && !errors.Is(rerr, io.EOF) {
				err = rerr
			}
		}
		return nil, err
	}
	if err := cs.CloseSend(); err != nil {
		return nil, err
	}
	return &Stream{cs: cs}, nil
}

// Recv returns the next event; io.EOF when the server ended the stream normally, else the
// stream's error.
func (s *Stream) Recv() (Event, error) {
	m := newMsg("Event")
	if err := s.cs.RecvMsg(m); err != nil {
		return Event{}, err
	}
	return Event{Name: m.Get(fieldOf(m, "name")).String(), Payload: m.Get(fieldOf(m, "payload")).Bytes()}, nil
}

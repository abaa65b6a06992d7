// Package customtrigger is the client of Argo Events' custom trigger protocol: the gRPC service
// triggers.Trigger of trigger.proto (Argo Events v1.9.11, Apache-2.0, copied next to this file).
//
// There is no protoc here, so nothing is generated: the file's descriptor is written out below
// and the messages are dynamicpb messages built from it, which gRPC's proto codec encodes as it
// encodes generated code.
package customtrigger

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// The full method names of triggers.Trigger.
const (
	FetchResourceMethod = "/triggers.Trigger/FetchResource"
	ExecuteMethod       = "/triggers.Trigger/Execute"
	ApplyPolicyMethod   = "/triggers.Trigger/ApplyPolicy"
)

// file is the descriptor of trigger.proto. It is not registered globally, so it cannot clash
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
	method := func(name string) *descriptorpb.MethodDescriptorProto {
		return &descriptorpb.MethodDescriptorProto{
			Name: proto.String(name), InputType: proto.String(".triggers." + name + "Request"),
			OutputType: proto.String(".triggers." + name + "Response"),
		}
	}
	const bytes, boolean, str = descriptorpb.FieldDescriptorProto_TYPE_BYTES,
		descriptorpb.FieldDescriptorProto_TYPE_BOOL, descriptorpb.FieldDescriptorProto_TYPE_STRING
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("trigger.proto"), Package: proto.String("triggers"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			message("FetchResourceRequest", field("resource", 1, bytes)),
			message("FetchResourceResponse", field("resource", 1, bytes)),
			message("ExecuteRequest", field("resource", 1, bytes), field("payload", 2, bytes)),
			message("ExecuteResponse", field("response", 1, bytes)),
			message("ApplyPolicyRequest", field("request", 1, bytes)),
			message("ApplyPolicyResponse", field("success", 1, boolean), field("message", 2, str)),
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name:   proto.String("Trigger"),
			Method: []*descriptorpb.MethodDescriptorProto{method("FetchResource"), method("Execute"), method("ApplyPolicy")},
		}},
	}, nil)
	if err != nil {
		panic("customtrigger: trigger.proto descriptor: " + err.Error())
	}
	return fd
}()

// msg is a message of trigger.proto, read and written by field name.
type msg struct{ *dynamicpb.Message }

func newMsg(name protoreflect.Name) msg {
	return msg{dynamicpb.NewMessage(file.Messages().ByName(name))}
}

func (m msg) field(name protoreflect.Name) protoreflect.FieldDescriptor {
	return m.Descriptor().Fields().ByName(name)
}

func (m msg) setBytes(name protoreflect.Name, v []byte) {
	if len(v) > 0 { // proto3: an empty field is not sent
		m.Set(m.field(name), protoreflect.ValueOfBytes(v))
	}
}

func (m msg) bytes(name protoreflect.Name) []byte { return m.Get(m.field(name)).Bytes() }

// Client calls a triggers.Trigger server.
type Client struct{ cc grpc.ClientConnInterface }

// NewClient returns a client that calls through cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

// FetchResource sends the trigger's spec and returns the resource the server made of it.
func (c *Client) FetchResource(ctx context.Context, resource []byte, opts ...grpc.CallOption) ([]byte, error) {
	req, resp := newMsg("FetchResourceRequest"), newMsg("FetchResourceResponse")
	req.setBytes("resource", resource)
	if err := c.cc.Invoke(ctx, FetchResourceMethod, req.Message, resp.Message, opts...); err != nil {
		return nil, err
	}
	return resp.bytes("resource"), nil
}

// Execute asks the server to execute the resource with the payload and returns its response.
func (c *Client) Execute(ctx context.Context, resource, payload []byte, opts ...grpc.CallOption) ([]byte, error) {
	req, resp := newMsg("ExecuteRequest"), newMsg("ExecuteResponse")
	req.setBytes("resource", resource)
	req.setBytes("payload", payload)
	if err := c.cc.Invoke(ctx, ExecuteMethod, req.Message, resp.Message, opts...); err != nil {
		return nil, err
	}
	return resp.bytes("response"), nil
}

// ApplyPolicy asks the server whether the response of Execute counts as a success.
func (c *Client) ApplyPolicy(ctx context.Context, request []byte, opts ...grpc.CallOption) (success bool, message string, err error) {
	req, resp := newMsg("ApplyPolicyRequest"), newMsg("ApplyPolicyResponse")
	req.setBytes("request", request)
	if err := c.cc.Invoke(ctx, ApplyPolicyMethod, req.Message, resp.Message, opts...); err != nil {
		return false, "", err
	}
	return resp.Get(resp.field("success")).Bool(), resp.Get(resp.field("message")).String(), nil
}
